"""Real GGUF files (slow tier): GGUFFile agrees with gguf.GGUFReader, opens fast, and dequantizes real tensors
bit-exactly. The files come from KVANT_TEST_SMOLLM2 / KVANT_TEST_GEMMA3 when set, else from kvant's model cache
(the smollm2_path / gemma3_path fixtures in tests/conftest.py, which skip with the reason if they cannot fetch)."""
import os
import time

import gguf
import numpy as np
import pytest

from kvant.formats.dequant import dequantize, dequantize_rows
from kvant.formats.gguf_file import GGUFFile

MODELS = {"smollm2": ("KVANT_TEST_SMOLLM2", "smollm2_path"), "gemma3": ("KVANT_TEST_GEMMA3", "gemma3_path")}


@pytest.fixture
def model_path(request):
    def get(name):
        var, fixture = MODELS[name]
        path = os.environ.get(var)
        if not path:
            return request.getfixturevalue(fixture)
        if not os.path.isfile(path):
            pytest.skip(f"{var}={path} is not a file")
        return path
    return get


@pytest.mark.realmodel
@pytest.mark.parametrize("name", MODELS)
def test_open_is_fast(model_path, name):
    path = model_path(name)
    GGUFFile(path).close()  # first open in the process pays numba's one-time start-up
    elapsed = float("inf")
    for _ in range(3):  # best of three: the machine is shared
        t = time.perf_counter()
        with GGUFFile(path) as f:
            elapsed = min(elapsed, time.perf_counter() - t)
            n_tokens = len(f.metadata["tokenizer.ggml.tokens"])
    print(f"\n{os.path.basename(path)}: opened in {elapsed * 1000:.1f} ms ({n_tokens} tokens, "
          f"{len(f.tensors)} tensors)")
    assert elapsed < 0.2


@pytest.mark.realmodel
@pytest.mark.parametrize("name", MODELS)
def test_matches_gguf_reader(model_path, name):
    path = model_path(name)
    reader = gguf.GGUFReader(path)
    with GGUFFile(path) as f:
        keys = [k for k in reader.fields if not k.startswith("GGUF.")]
        assert list(f.metadata) == keys
        for key in keys:
            got = f.metadata[key]
            assert (got.tolist() if isinstance(got, np.ndarray) else got) == reader.fields[key].contents(), key
        assert list(f.tensors) == [t.name for t in reader.tensors]
        for rt in reader.tensors:
            t = f.tensors[rt.name]
            assert t.shape == tuple(reversed(rt.shape.tolist())), rt.name
            assert (t.ggml_type.id, t.offset, t.nbytes) == (rt.tensor_type, rt.data_offset, rt.n_bytes), rt.name


@pytest.mark.realmodel
@pytest.mark.parametrize("name", MODELS)
def test_real_tensors_dequantize_bit_exact(model_path, name):
    path = model_path(name)
    with GGUFFile(path) as f:
        done = set()
        for t in f.tensors.values():
            if (t.ggml_type.name, len(t.shape)) in done:
                continue
            done.add((t.ggml_type.name, len(t.shape)))
            raw = f.raw(t.name)[:64]
            ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(t.ggml_type.id))
            assert np.array_equal(dequantize(raw, t.ggml_type).view(np.uint32), ref.view(np.uint32)), t.name
        emb = f.tensors["token_embd.weight"]
        ids = [0, 1, emb.shape[0] // 2, emb.shape[0] - 1]
        rows = dequantize_rows(f.raw(emb.name), emb.ggml_type, ids)
        ref = gguf.quants.dequantize(f.raw(emb.name)[ids], gguf.GGMLQuantizationType(emb.ggml_type.id))
        assert np.array_equal(rows.view(np.uint32), ref.view(np.uint32))
