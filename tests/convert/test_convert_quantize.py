"""qconv quantize and qconv to-gguf -t PRESET against llama-quantize, byte for byte.

tests/fixtures/convert/llamacpp_quantize.json (tests/make_convert_fixtures.py quantize) holds, for each fixture and
preset, the sha256 of the file llama_model_quantize wrote from kvant's F32 conversion, and each tensor's type and
hash. kvant must write the same file: same keys in the same order, same tensor order, types and bytes.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_helpers import HF, MODELS, f32_files, file_sha, load_json  # noqa: E402,F401 (f32_files: a fixture)
from kvant.convert.pipeline import convert  # noqa: E402
from kvant.convert.requantize import quantize_gguf  # noqa: E402
from kvant.formats.gguf_file import GGUFFile  # noqa: E402

ORACLE = load_json("llamacpp_quantize.json")
CASES = [(m, p) for m in MODELS for p in ORACLE[m] if p != "F32"]


def explain(path, want):
    """Which tensors differ, for the failure message."""
    import hashlib
    with GGUFFile(path) as g:
        got = [[n, t.ggml_type.name, hashlib.sha256(g.raw(n).tobytes()).hexdigest()[:16]]
               for n, t in g.tensors.items()]
    if [t[:2] for t in got] != [t[:2] for t in want["tensors"]]:
        return f"tensor order or types differ: {[t[:2] for t in got][:6]} vs {[t[:2] for t in want['tensors']][:6]}"
    bad = [g[0] for g, w in zip(got, want["tensors"]) if g[2] != w[2]]
    return f"{len(bad)} tensors differ: {bad[:6]}" if bad else "the metadata differs"


def test_f32_input_is_what_the_oracle_quantized(f32_files):
    for name in MODELS:
        assert file_sha(f32_files[name]) == ORACLE[name]["F32"], name


@pytest.mark.parametrize("name,preset", CASES)
def test_quantize_matches_llama_quantize(tmp_path, f32_files, name, preset):
    out = str(tmp_path / "q.gguf")
    quantize_gguf(f32_files[name], out, preset, progress=False)
    want = ORACLE[name][preset]
    assert file_sha(out) == want["sha256"], explain(out, want)


SLAB_CASES = [(m, p) for m, p in CASES if p in ("Q4_K_M", "IQ4_XS", "Q2_K")][:4]


@pytest.mark.parametrize("name,preset", SLAB_CASES)
def test_quantize_in_small_slabs_writes_the_same_bytes(tmp_path, f32_files, name, preset):
    """A re-encoded tensor is decoded and encoded in slabs of rows (memory bounded by a slab, not by the tensor):
    100 KiB of float32 splits the fixtures' 512-row tensors into several slabs, the last one shorter."""
    out = str(tmp_path / "q.gguf")
    quantize_gguf(f32_files[name], out, preset, progress=False, slab_bytes=100 << 10)
    want = ORACLE[name][preset]
    assert file_sha(out) == want["sha256"], explain(out, want)


# (F32, F16, BF16, Q8_0, TQ1_0 and TQ2_0 follow llama.cpp's converter instead: test_convert_hf.py)
TO_GGUF = [(m, "Q4_K_M") for m in MODELS] + [("gemma3", "Q4_0"), ("llama", "Q3_K_M"), ("qwen2", "IQ4_NL"),
                                             ("mistral", "Q6_K"), ("bitnet", "Q2_K")]


@pytest.mark.parametrize("name,preset", TO_GGUF)
def test_to_gguf_preset_matches_convert_then_llama_quantize(tmp_path, name, preset):
    out = str(tmp_path / "q.gguf")
    convert(os.path.join(HF, name), out, preset, progress=False)
    want = ORACLE[name][preset]
    assert file_sha(out) == want["sha256"], explain(out, want)


def test_requantize_keeps_metadata_and_copies_unchanged_tensors(tmp_path, f32_files):
    q8 = str(tmp_path / "q8.gguf")
    quantize_gguf(f32_files["gemma3"], q8, "Q8_0", progress=False)
    with GGUFFile(f32_files["gemma3"]) as a, GGUFFile(q8) as b:
        for k, v in a.metadata.items():
            if k != "general.file_type":
                assert (list(b.metadata[k]) == list(v)) if hasattr(v, "__len__") and not isinstance(v, str) \
                    else b.metadata[k] == v, k
        assert b.metadata["general.file_type"] == 7
        assert (a.raw("blk.0.attn_norm.weight") == b.raw("blk.0.attn_norm.weight")).all()
