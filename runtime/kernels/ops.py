"""The non-matmul kernels of a transformer layer: norms, RoPE, activations, attention over an f16 KV cache.

Arrays and scalars in, output first, no config objects. Activations are float32 (n_tokens, width).
"""
import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload
from ._isa import FAST

from kvant.runtime.kernels._common import copy_into
from kvant.runtime.kernels._ir import f32_to_f16_bits, pow2i, widen
from kvant.runtime.kernels.actquant import round_f16



@njit(cache=True, inline="always")
def _rms_scale(x, eps):
    # as ggml's rms_norm: float products summed in double, the mean and 1/sqrt in float
    ss = 0.0
    for i in range(x.shape[0]):
        ss += np.float64(x[i] * x[i])
    mean = np.float32(ss / x.shape[0])
    return np.float32(1.0) / np.float32(math.sqrt(np.float32(mean + eps)))


@njit(cache=True)
def rmsnorm(out, x, weight, eps):
    """out[t] = (x[t] / rms(x[t])) * weight, per row (token); ggml's rounding order, so no fastmath."""
    n, d = x.shape
    for t in range(n):
        scale = _rms_scale(x[t], eps)
        for i in range(d):
            out[t, i] = np.float32(x[t, i] * scale) * weight[i]


@njit(cache=True)
def rmsnorm_heads(x, weight, eps):
    """In-place RMSNorm of every head vector: x (n, n_heads, head_dim), weight (head_dim,) (qwen3/gemma3 q/k norm)."""
    n, h, d = x.shape
    for t in range(n):
        for j in range(h):
            scale = _rms_scale(x[t, j], eps)
            for i in range(d):
                x[t, j, i] = np.float32(x[t, j, i] * scale) * weight[i]


def rope_tables(n_ctx, n_rot, freq_base, freq_scale=1.0, freq_factors=None):
    """cos, sin tables (n_ctx, n_rot // 2) float32, computed as ggml does: theta starts at the position and is
    multiplied by freq_base ** (-2 / n_rot) in float32 for each pair, so positions rotate exactly as in llama.cpp."""
    half = n_rot // 2
    theta_scale = np.float32(np.power(np.float32(freq_base), np.float32(-2.0) / np.float32(n_rot)))
    factors = np.ones(half, np.float32) if freq_factors is None else np.asarray(freq_factors, np.float32)
    return _rope_tables(n_ctx, half, theta_scale, np.float32(freq_scale), factors)


@njit(cache=True)
def _rope_tables(n_ctx, half, theta_scale, freq_scale, freq_factors):
    cos = np.empty((n_ctx, half), dtype=np.float32)
    sin = np.empty((n_ctx, half), dtype=np.float32)
    for pos in range(n_ctx):
        theta = np.float32(pos)
        for i in range(half):
            t = np.float32(freq_scale * np.float32(theta / freq_factors[i]))
            cos[pos, i] = np.float32(math.cos(t))
            sin[pos, i] = np.float32(math.sin(t))
            theta = np.float32(theta * theta_scale)
    return cos, sin


@njit(cache=True, fastmath=FAST)
def rope(x, positions, cos, sin, n_rot, neox):
    """In-place rotary embedding of x (n, n_heads, head_dim) at positions (n,).
    neox: rotate pairs (i, i + n_rot/2) (qwen, gemma); else adjacent pairs (2i, 2i+1) (llama)."""
    n, h, _ = x.shape
    half = n_rot // 2
    for t in range(n):
        pos = positions[t]
        for j in range(h):
            for i in range(half):
                c = cos[pos, i]
                s = sin[pos, i]
                if neox:
                    a = i
                    b = i + half
                else:
                    a = 2 * i
                    b = 2 * i + 1
                x0 = x[t, j, a]
                x1 = x[t, j, b]
                x[t, j, a] = x0 * c - x1 * s
                x[t, j, b] = x0 * s + x1 * c


@njit(cache=True, fastmath=FAST, error_model="numpy")
def silu_mul(gate, up):
    """gate = silu(gate) * up, in place (SwiGLU): g / (1 + e^-g), for g < 0 as g e^g / (1 + e^g), so that the
    exponent is never positive and the loop vectorizes (exp_nonpositive). error_model="numpy": numba's default
    checks every float division for zero, a branch that keeps the loop scalar (with libm's exp: 2.9 ns an element,
    16 us per 1.1B layer; now 0.3 ns)."""
    n, d = gate.shape
    for t in range(n):
        for i in range(d):
            g = gate[t, i]
            e = exp_nonpositive(-abs(g))
            gate[t, i] = (g if g >= 0 else g * e) / (np.float32(1.0) + e) * up[t, i]


_GELU_A = np.float32(0.044715)
_SQRT_2_OVER_PI = np.float32(0.7978845608028654)


def _gelu_table():
    """ggml_gelu_f32 of every f16 value rounded to f16, indexed by the f16's bits, as ggml's GGML_GELU_FP16 table
    (kept as float32). The float32 polynomial and a double tanh: the same values as the numba loop this replaced,
    for all 37,376 inputs inside (-10, 10) (numpy's float32 tanh differs in 235)."""
    from kvant.formats.codecs_common import F16_TO_F32
    x = F16_TO_F32.copy()
    with np.errstate(invalid="ignore", over="ignore"):
        inner = _SQRT_2_OVER_PI * x * (np.float32(1.0) + _GELU_A * x * x)
        g = np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner.astype(np.float64)).astype(np.float32))
    return g.astype(np.float16).astype(np.float32)


_GELU_TABLE = _gelu_table()


@njit(cache=True)
def gelu_mul(gate, up):
    """gate = gelu(gate) * up, in place (GeGLU, tanh approximation). As ggml on x86 (GGML_GELU_FP16): inside
    (-10, 10) the input is rounded to f16 and the result read from an f16 table (a lookup: computing tanh per
    element took 11 ns, a third of gemma-3's prefill)."""
    n, d = gate.shape
    for t in range(n):
        for i in range(d):
            x = gate[t, i]
            if x <= -10.0:
                gate[t, i] = 0.0
            elif x >= 10.0:
                gate[t, i] = x * up[t, i]
            else:
                gate[t, i] = _GELU_TABLE[f32_to_f16_bits(x)] * up[t, i]


@njit(cache=True, fastmath=FAST)
def relu2_mul(gate, up):
    """gate = relu(gate)^2 * up, in place (BitNet's squared ReLU)."""
    n, d = gate.shape
    for t in range(n):
        for i in range(d):
            g = max(gate[t, i], np.float32(0.0))
            gate[t, i] = g * g * up[t, i]


ACTIVATIONS = {"silu": silu_mul, "gelu": gelu_mul, "relu2": relu2_mul}


KV_TYPES = {"f16": np.uint16, "f32": np.float32}   # the cache's storage: f16 bit patterns, or float32


def store_kv(cache, start, values):
    """Write values (n, n_kv_heads, head_dim) float32 into cache (n_kv_heads, n_ctx, head_dim) at positions
    start..start+n; an f16 cache (uint16 bits) rounds to nearest even like ggml."""
    if cache.dtype == np.uint16:
        _store_f16(cache, start, values)
    else:
        cache[:, start:start + values.shape[0], :] = values.transpose(1, 0, 2)


@njit(cache=True)
def _store_f16(cache, start, values):
    """vcvtps2ph where the CPU has F16C (numpy's astype(float16) took 5% of a short prompt's time)."""
    n, heads, width = values.shape
    for h in range(heads):
        for t in range(n):
            for i in range(width):
                cache[h, start + t, i] = f32_to_f16_bits(values[t, h, i])


def _round_as_cache(a, cache):
    """Round a to what a dot product with this cache sees: f16 for an f16 cache (ggml converts the other operand
    to the cache's type), unchanged for an f32 cache."""


@overload(_round_as_cache)
def _round_as_cache_impl(a, cache):
    if cache.dtype == types.uint16:
        def rounded(a, cache):
            round_f16(a)
        return rounded

    def unchanged(a, cache):
        pass
    return unchanged


# e^b - 1 = p(b) on |b| <= ln 2 / 2 (the minimax coefficients of ggml_v_expf, b to b^5), and ln 2 split in two
_EXP_POLY = tuple(np.float32(float.fromhex(c)) for c in ("0x1.ffffecp-1", "0x1.fffdb6p-2", "0x1.555e66p-3",
                                                          "0x1.573e2ep-5", "0x1.0e4020p-7"))
_LN2_HI, _LN2_LO = np.float32(float.fromhex("0x1.62e4p-1")), np.float32(float.fromhex("0x1.7f7d1cp-20"))
_LOG2_E = np.float32(float.fromhex("0x1.715476p+0"))


@njit(cache=True, fastmath=FAST, inline="always")
def exp_nonpositive(x):
    """e^x for x <= 0 in float32, within ~2 ulp, flushed to 2^-126 below -87 (a probability that small rounds to 0
    in f16 and is nothing against a sum >= 1). A polynomial instead of libm's exp so the softmax loop vectorizes:
    as llama.cpp's ggml_v_expf, x = n ln2 + b, e^x = 2^n (1 + p(b))."""
    x = max(x, np.float32(-87.0))
    n = np.float32(np.rint(x * _LOG2_E))
    b = x - n * _LN2_HI - n * _LN2_LO
    c1, c2, c3, c4, c5 = _EXP_POLY
    u = b * b
    p = ((c5 * b + c4) * u + (c3 * b + c2)) * u + c1 * b
    s = pow2i(np.int32(n))
    return s + s * p


@njit(cache=True, fastmath=FAST, inline="always")
def _dot_keys(scores, qh, keys, first, end):
    """scores[j] = qh . keys[j] for first <= j < end, four keys a pass (four independent sums: one reduction each
    per key, but the loads of qh shared and the adds in flight together)."""
    j = first
    while j + 4 <= end:
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for i in range(qh.shape[0]):
            q = qh[i]
            s0 += q * widen(keys[j, i])
            s1 += q * widen(keys[j + 1, i])
            s2 += q * widen(keys[j + 2, i])
            s3 += q * widen(keys[j + 3, i])
        scores[j], scores[j + 1], scores[j + 2], scores[j + 3] = s0, s1, s2, s3
        j += 4
    for jj in range(j, end):
        s = np.float32(0.0)
        for i in range(qh.shape[0]):
            s += qh[i] * widen(keys[jj, i])
        scores[jj] = s


@njit(cache=True, fastmath=FAST, inline="always")
def _weigh_values(acc, probs, vals, first, end):
    """acc = sum over first <= j < end of probs[j] * vals[j], four rows a pass (acc read and written once per four)."""
    acc[:] = 0.0
    j = first
    while j + 4 <= end:
        w0, w1, w2, w3 = probs[j], probs[j + 1], probs[j + 2], probs[j + 3]
        for i in range(acc.shape[0]):
            acc[i] += (w0 * widen(vals[j, i]) + w1 * widen(vals[j + 1, i])) + (
                w2 * widen(vals[j + 2, i]) + w3 * widen(vals[j + 3, i]))
        j += 4
    for jj in range(j, end):
        w = probs[jj]
        for i in range(acc.shape[0]):
            acc[i] += w * widen(vals[jj, i])


@njit(cache=True, fastmath=FAST, inline="always")
def softmax_scaled(row, scale, softcap):
    """row = softmax(row * scale (tanh-capped when softcap > 0)), the sum in float64, in loops that vectorize (the cap
    in its own loop: a tanh call inside the first loop kept all of them scalar, 3.5 ns a score)."""
    for j in range(row.shape[0]):
        row[j] = row[j] * scale
    if softcap > 0:
        for j in range(row.shape[0]):
            row[j] = softcap * math.tanh(row[j] / softcap)
    m = np.float32(-np.inf)
    for j in range(row.shape[0]):
        m = max(m, row[j])
    total = 0.0
    for j in range(row.shape[0]):
        e = exp_nonpositive(row[j] - m)
        row[j] = e
        total += e
    inv = np.float32(1.0 / total)
    for j in range(row.shape[0]):
        row[j] = row[j] * inv


@njit(cache=True, parallel=True, fastmath=FAST)
def attention(out, q, k_cache, v_cache, start, scale, window, softcap):
    """Causal attention of n query tokens at positions start..start+n-1 over the cache, with llama.cpp's rounding
    (its non-flash path): on an f16 cache q is rounded to f16 for q.k and the normalized probabilities to f16
    before they weight the values; the softmax is summed in float64.
    out (n, n_head, dv), q (n, n_head, dk), k_cache (n_kv, n_ctx, dk), v_cache (n_kv, n_ctx, dv): f16 bits
    (uint16) or float32, read in place (f16 widened by vcvtph2ps in the loops: a widened copy per head, through a
    lookup table, cost 9 us per cached position per SmolLM2 token).
    window > 0: a query at p sees keys at p - window < j <= p (sliding-window layers). softcap > 0: tanh cap."""
    n, n_head, dk = q.shape
    n_kv = k_cache.shape[0]
    dv = v_cache.shape[2]
    group = n_head // n_kv
    end = start + n
    for h in prange(n_head):
        keys = k_cache[h // group]
        vals = v_cache[h // group]
        scores = np.empty(end, dtype=np.float32)
        qh = np.empty(dk, dtype=np.float32)
        acc = np.empty(dv, dtype=np.float32)
        for t in range(n):
            pos = start + t
            first = max(0, pos - window + 1) if window > 0 else 0
            copy_into(qh, q[t, h])
            _round_as_cache(qh, k_cache)
            _dot_keys(scores, qh, keys, first, pos + 1)
            probs = scores[first:pos + 1]
            softmax_scaled(probs, scale, softcap)
            _round_as_cache(probs, v_cache)
            _weigh_values(acc, scores, vals, first, pos + 1)
            for i in range(dv):
                out[t, h, i] = acc[i]
