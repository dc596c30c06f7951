"""llama.cpp and kvant agree on every converted file (the converter issue's acceptance criterion: Pearson >= 0.999
and the same argmax at >= 98% of positions, on the same tokens and the same file).

llama.cpp's side is stored: tests/fixtures/convert/llamacpp_logits.npz, made by tests/make_convert_logits_fixtures.py
(CI has no llama.cpp). Each case re-converts the fixture, checks the file's sha256 against the stored one (so
llama.cpp read exactly these bytes), runs kvant's runtime on the fixture's ref_tokens.npy and compares. Both sides
use an f16 KV cache (llama.cpp's default, which the fixtures were made with).

Known gap, marked xfail (strict: a pass would mean the comparison no longer tests what it says):
  - bitnet (every type): llama.cpp's bitnet graph computes SiLU in the FFN where the model (and kvant) use relu2;
    kvant writes bitnet.hidden_activation, which llama.cpp ignores.
"""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_helpers import FIXTURES, HF, MODELS, file_sha  # noqa: E402
from kvant.convert.pipeline import convert  # noqa: E402

TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_K_M")
STORE = os.path.join(FIXTURES, "llamacpp_logits.npz")
BITNET = ("llama.cpp's bitnet graph uses SiLU where the model and kvant use relu2 "
          "(bitnet.hidden_activation is ignored by llama.cpp)")
XFAIL = {("bitnet", t): BITNET for t in TYPES + ("TQ2_0",)}


def cases():
    out = []
    for name in MODELS:
        for t in TYPES + (("TQ2_0",) if name == "bitnet" else ()):
            reason = XFAIL.get((name, t))
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            out.append(pytest.param(name, t, marks=marks, id=f"{name}-{t}"))
    return out


@pytest.fixture(scope="module")
def store():
    with np.load(STORE) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name,type_", cases())
def test_kvant_matches_llamacpp_on_same_file(tmp_path, store, name, type_):
    from kvant.runtime import Model
    key = f"{name}-{type_}"
    assert f"{key}.error" not in store, f"llama.cpp refused {key}: {store[key + '.error']}"
    out = str(tmp_path / f"{key}.gguf")
    convert(os.path.join(HF, name), out, type_, progress=False)
    assert file_sha(out) == str(store[f"{key}.sha256"]), \
        f"{key}: converter output changed; regenerate with tests/make_convert_logits_fixtures.py"
    tokens = [int(t) for t in np.load(os.path.join(HF, name, "ref_tokens.npy"))]
    ref = store[f"{key}.logits"].astype(np.float32)
    with Model(out, n_ctx=max(64, len(tokens)), n_threads=2) as m:
        got = np.asarray(m.transformer.forward(tokens, 0, m.cache, logits_from=0), dtype=np.float32)
    assert got.shape == ref.shape
    pearson = np.corrcoef(got.ravel(), ref.ravel())[0, 1]
    same_argmax = (got.argmax(1) == ref.argmax(1)).mean()
    assert pearson >= 0.999 and same_argmax >= 0.98, f"{key}: Pearson {pearson:.5f}, argmax {same_argmax:.3f}"
