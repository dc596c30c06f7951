"""The tokenizer kvant writes into a converted GGUF gives the Hugging Face tokenizer's ids (tokenizer.json through the
`tokenizers` library, which is what transformers' fast tokenizers run) on ../shared/corpora, English and Russian."""
import os
import sys

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_helpers import HF, MODELS, f32_files  # noqa: F401  (session fixture)
from kvant.formats.gguf_file import GGUFFile  # noqa: E402
from kvant.runtime.tokenizer import Tokenizer  # noqa: E402
from shared_files import corpus  # noqa: E402




@pytest.mark.parametrize("name", MODELS)
def test_gguf_tokenizer_equals_hf_tokenizer_on_corpora(name, f32_files):  # noqa: F811
    hf = HFTokenizer.from_file(os.path.join(HF, name, "tokenizer.json"))
    with GGUFFile(f32_files[name]) as g:
        ours = Tokenizer.from_metadata(g.metadata)
    for lang in ("en", "ru"):
        text = corpus(lang)
        expected = hf.encode(text, add_special_tokens=False).ids
        got = ours.encode(text, add_special=False)
        assert got == expected, (lang, next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b))


@pytest.mark.parametrize("name", MODELS)
def test_fixture_sentence_ids(name, f32_files):  # noqa: F811
    """ref_tokens.npy are the ids HF's tokenizer gave for the fixture's sentence. These tokenizers add no special
    tokens; the GGUF follows llama.cpp's converter instead (gemma3: add_bos_token = true), so compare without."""
    ref = np.load(os.path.join(HF, name, "ref_tokens.npy")).tolist()
    hf = HFTokenizer.from_file(os.path.join(HF, name, "tokenizer.json"))
    text = hf.decode(ref, skip_special_tokens=True)
    with GGUFFile(f32_files[name]) as g:
        ours = Tokenizer.from_metadata(g.metadata)
    assert ours.encode(text, add_special=False) == ref
