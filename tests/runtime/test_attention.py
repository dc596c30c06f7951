"""ops.attention and its vectorized exp against numpy references written from the definitions (llama.cpp's
non-flash path: f16 cache, q and the normalized probabilities rounded to f16, softmax summed in float64)."""
import numpy as np
import pytest
from numba import njit

from kvant.runtime.kernels import ops


@njit(cache=True)
def _exp_all(x, out):
    for i in range(x.shape[0]):
        out[i] = ops.exp_nonpositive(x[i])


def test_exp_nonpositive_within_two_ulp():
    rng = np.random.default_rng(0)
    x = -np.concatenate([np.linspace(0, 87, 400_001), rng.exponential(3, 100_000)]).astype(np.float32)
    x = x[x >= -87]
    got = np.empty_like(x)
    _exp_all(x, got)
    want = np.exp(x.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 2.0
    assert got[x == 0][0] == 1.0


def test_exp_nonpositive_flushes_below_the_normal_range():
    got = np.empty(3, np.float32)
    _exp_all(np.array([-90.0, -1000.0, -np.inf], np.float32), got)
    assert np.all(got > 0) and np.all(got < 2e-38)


def _reference(q, k, v, start, scale, window, f16):
    """Causal attention from the definition, in float64 except where llama.cpp rounds."""
    n, n_head, dk = q.shape
    group = n_head // k.shape[0]
    out = np.zeros((n, n_head, v.shape[2]))
    for t in range(n):
        pos = start + t
        first = max(0, pos - window + 1) if window > 0 else 0
        for h in range(n_head):
            qh = q[t, h].astype(np.float16).astype(np.float64) if f16 else q[t, h].astype(np.float64)
            s = k[h // group, first:pos + 1].astype(np.float64) @ qh * scale
            p = np.exp(s - s.max())
            p = (p / p.sum()).astype(np.float32)
            if f16:
                p = p.astype(np.float16)
            out[t, h] = p.astype(np.float64) @ v[h // group, first:pos + 1].astype(np.float64)
    return out


@pytest.mark.parametrize("f16", [True, False])
@pytest.mark.parametrize("n,start,window", [(1, 0, 0), (1, 37, 0), (1, 37, 8), (6, 0, 0), (5, 30, 4), (9, 3, 0)])
def test_attention_matches_the_definition(f16, n, start, window):
    rng = np.random.default_rng(n * 100 + start)
    n_kv, n_head, d, ctx = 2, 6, 40, 64
    q = rng.standard_normal((n, n_head, d)).astype(np.float32)
    k = rng.standard_normal((n_kv, ctx, d)).astype(np.float16)
    v = rng.standard_normal((n_kv, ctx, d)).astype(np.float16)
    k_cache, v_cache = (k.view(np.uint16), v.view(np.uint16)) if f16 else (k.astype(np.float32), v.astype(np.float32))
    out = np.empty((n, n_head, d), np.float32)
    scale = np.float32(d ** -0.5)
    ops.attention(out, q, k_cache, v_cache, start, scale, window, np.float32(0.0))
    want = _reference(q, k, v, start, float(scale), window, f16)
    # measured ~3e-7; with f16 probabilities a few f32 ulp in a score could move one across an f16 rounding boundary
    # (2^-11 of a probability), hence the looser bound there. A window off by one misses by > 1.
    assert np.max(np.abs(out - want)) < (1e-4 if f16 else 1e-5)
