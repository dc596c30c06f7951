"""The one-call-per-layer decode step (runtime/decode.py) gives exactly the logits of the op-by-op forward pass, on
every architecture's converted fixture (biases, q/k norms, sub-norms, post-norms, sliding windows, GELU / squared
ReLU) in stacked and unstacked type mixtures, with both KV cache types."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_helpers import HF, MODELS  # noqa: E402

# Q4_K_M gives q/k/v (and gate/up) of different types in some layers, so they are not stacked there
TYPES = {"F32": "f32", "Q8_0": "f16", "Q4_K_M": "f16"}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from kvant.convert.pipeline import convert
    out = tmp_path_factory.mktemp("decode")
    paths = {}
    for name in MODELS:
        for t in TYPES:
            paths[name, t] = str(out / f"{name}-{t}.gguf")
            convert(os.path.join(HF, name), paths[name, t], t, progress=False)
    return paths


def _decode_logits(model, fused, steps=6):
    from kvant.runtime.model import KVCache
    tf = model.transformer
    tf.observer = None if fused else (lambda name, x: None)     # an observer keeps forward() op by op
    cache = KVCache(tf.cfg, 64, model.kv_type)
    tf.forward([1, 5, 9, 2, 7], 0, cache)
    token, out = 3, []
    for pos in range(5, 5 + steps):
        logits = tf.forward([token], pos, cache)[0]
        out.append(logits.copy())
        token = int(np.argmax(logits)) % 50 + 1
    return np.array(out)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("weight_type", list(TYPES))
def test_decode_step_equals_forward(converted, name, weight_type):
    from kvant.runtime import Model
    with Model(converted[name, weight_type], n_ctx=64, n_threads=2, kv_type=TYPES[weight_type]) as m:
        fused = _decode_logits(m, fused=True)
        stepwise = _decode_logits(m, fused=False)
        assert m.transformer._steps is not None       # the fused path did run
    np.testing.assert_array_equal(fused, stepwise)


def test_f16_bits_match_numpy():
    """The f16 KV cache's conversion (decode's store and the prefill's ops.store_kv): numpy's bits, nearest even."""
    from numba import njit
    from kvant.runtime.kernels._ir import f32_to_f16_bits

    @njit
    def convert(a):
        out = np.empty(a.shape[0], np.uint16)
        for i in range(a.shape[0]):
            out[i] = f32_to_f16_bits(a[i])
        return out

    rng = np.random.default_rng(0)
    values = rng.standard_normal(100_000).astype(np.float32) * np.float32(10.0) ** rng.integers(-9, 6, 100_000)
    edges = np.array([0, -0.0, np.inf, -np.inf, 65504, 65519.9, 65520, 6e-8, 3e-8, 2.9e-8, 6.1e-5, 6.09e-5, -1e-7])
    a = np.concatenate([values, edges]).astype(np.float32)
    with np.errstate(over="ignore"):
        expected = a.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(convert(a), expected)
