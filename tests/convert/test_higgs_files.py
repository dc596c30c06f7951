"""Files in kvant's HIGGS types end to end: `qconv quantize IN OUT HG4` writes them (with their kvant.higgs.* keys and
a line saying they run only in kvant), `qconv inspect` names them, the runtime runs them, and `--allow-requantize`
turns them back into standard types. The runtime's logits on an HG file are checked against the same model with
every HIGGS tensor decoded to F32 (formats' decoder, tested against numpy in tests/formats/test_higgs_types.py)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_helpers import HF, f32_files  # noqa: E402,F401 (a fixture)
from kvant.convert.cli import main  # noqa: E402
from kvant.formats import higgs_types  # noqa: E402
from kvant.formats.gguf_file import GGUFFile  # noqa: E402
from kvant.runtime.kernels import higgs  # noqa: E402


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def logits(path, tokens):
    from kvant.runtime import Model
    with Model(path, n_ctx=64, n_threads=2, kv_type="f32") as m:
        return np.asarray(m.transformer.forward([int(t) for t in tokens], 0, m.cache, logits_from=0))


@pytest.mark.parametrize("name, preset", [("llama", "HG4"), ("gemma3", "HG3"), ("qwen3", "HG2")])
def test_hg_file_written_inspected_run_and_turned_back(tmp_path, capsys, f32_files, name, preset):
    hg = str(tmp_path / f"{preset}.gguf")
    # the embedding and the head stay F32, so that the logits below differ by the HIGGS kernels alone (the Q6_K
    # head of the preset would round the activations to 8 bits, as llama.cpp does)
    code, _, err = run(["quantize", f32_files[name], hg, preset, "--tensor-type", "output|token_embd=F32"], capsys)
    assert code == 0, err
    assert f"holds kvant's own {preset} tensors: it runs only in kvant" in err
    with GGUFFile(hg) as g:
        types = {t.ggml_type.name for t in g.tensors.values()}
        assert preset in types
        assert g.metadata[higgs_types.KEY_VERSION] == higgs_types.VERSION
        assert np.array_equal(g.metadata[higgs_types.KEY_GRID + preset], higgs_types.grid(preset).reshape(-1))

    code, out, _ = run(["inspect", hg], capsys)
    assert code == 0 and (f"{preset}: kvant's own HIGGS types (version {higgs_types.VERSION}): this file runs only in "
                          "kvant") in out

    back = str(tmp_path / "back.gguf")          # every HIGGS tensor decoded, the rest copied
    code, _, err = run(["quantize", hg, back, "F32"], capsys)
    assert code != 0 and "--allow-requantize" in err and not os.path.exists(back)
    code, _, err = run(["quantize", hg, back, "F32", "--allow-requantize"], capsys)
    assert code == 0 and "runs only in kvant" not in err
    with GGUFFile(back) as g:
        assert {t.ggml_type.name for t in g.tensors.values()} == {"F32"}
        assert not any(k.startswith(higgs_types.KEY_PREFIX) for k in g.metadata)

    tokens = np.load(os.path.join(HF, name, "ref_tokens.npy"))[:24]
    got, want = logits(hg, tokens), logits(back, tokens)
    # on x86 the prefill rounds the rotated tokens to int8 per 32 (as the Q8_0 types' GEMMs do): ~1% of the largest
    # logit on these tiny random models, against float summation order on the float path
    tolerance = 3e-2 if higgs.LOOKUP or higgs.PSHUFB else 1e-3
    assert np.abs(got - want).max() <= tolerance * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95


def test_to_gguf_straight_to_a_higgs_type(tmp_path, capsys):
    out = str(tmp_path / "hg3.gguf")
    code, _, err = run(["to-gguf", os.path.join(HF, "qwen3"), "-o", out, "-t", "HG3"], capsys)
    assert code == 0, err
    assert "runs only in kvant" in err
    with GGUFFile(out) as g:        # opens: its grid keys are there
        assert "HG3" in {t.ggml_type.name for t in g.tensors.values()}
        assert g.metadata[higgs_types.KEY_VERSION] == higgs_types.VERSION
