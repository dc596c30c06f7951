"""Activations as llama.cpp's CPU backend sees them.

llama.cpp quantizes each activation row to the weight type's "vec_dot type" before its dot products: Q8_0 (blocks of
32, fp16 scale), Q8_1 (the same plus a block sum) or Q8_K (blocks of 256, f32 scale), or rounds it to F16 / BF16.
That rounding moves logits by up to about one unit on SmolLM2 (its activations have large outlier channels), enough
to change greedy choices. To give llama.cpp's numbers, kvant applies the same rounding: each function writes
out = dequantize(quantize(x)) in float32, which the float kernels then multiply exactly as the integer dot products
would (the integer sums are exact; the float scale products differ only in the last bits).
"""
import numpy as np
from numba import njit, prange

from kvant.formats.specs import SPECS

from ._isa import FAST
from ._ir import f16_to_f32, f32_to_f16_bits

# x86's quantize_row_q8_0 / q8_1 (AVX2): id = 127 / amax, round half to even; d stored as fp16.
# quantize_row_q8_K_ref: iscale = -127 / (the signed value of largest magnitude), nearest_int (half to even),
# q = min(127, .), d = 1 / iscale kept in f32.
# A NaN or infinite activation makes its block's scale NaN (_poison): its int8 code is meaningless, and without the
# NaN scale the block would pass as finite codes and a corrupt weight would never reach the sampler's check of the
# logits (tests: a NaN weight in any layer). fastmath would fold the test for NaN away, so these say fastmath=False
# explicitly: a function that leaves it unset inherits the fastmath=FAST of the kernel that calls it (numba's option
# inheritance), and did. The test is an or of comparisons, not a float sum of v - v: that sum's chain of dependent
# additions made quantizing the activations cost 5% of a prompt's time.
_NAN = np.float32(np.nan)
_FLT_MAX = np.float32(3.4028235e38)


@njit(cache=True, fastmath=False, inline="always")
def _not_finite(v):
    return not abs(v) <= _FLT_MAX         # NaN compares false


@njit(cache=True, fastmath=False, inline="always")
def _poison(bad):
    """NaN where a block had a value that is not finite, else 0 (added to its scale)."""
    return _NAN if bad else np.float32(0.0)


@njit(cache=True, inline="always")
def _nearest_f16(v):
    """The float16 value nearest float32 v (ties to even; past 65504 inf, NaN stays NaN), through LLVM's half type:
    vcvtps2ph + vcvtph2ps on x86, 8 or 16 values an instruction in a loop."""
    return f16_to_f32(f32_to_f16_bits(v))


@njit(cache=True)
def round_f16(a):
    """Round every float32 of the 1-D array a to the nearest float16 value, in place."""
    for i in range(a.shape[0]):
        a[i] = _nearest_f16(a[i])


@njit(cache=True, fastmath=False)
def q8_codes(q, d, s, x):
    """llama.cpp's quantize_row_q8_0 / q8_1: int8 codes q and per-32 scales d (float32 holding the fp16-rounded
    scale); when s has room, also Q8_1's block sums s = fp16(d before rounding * sum of the block's codes)."""
    nb = d.shape[0]
    iscale = np.empty(nb, np.float32)
    for b in range(nb):
        amax, bad = np.float32(0.0), False
        for j in range(32):
            v = x[b * 32 + j]
            amax = max(amax, abs(v))
            bad |= _not_finite(v)
        d[b] = amax / np.float32(127.0) + _poison(bad)
        iscale[b] = np.float32(127.0) / amax if amax != 0 else np.float32(0.0)
    for b in range(nb):
        total = 0
        for j in range(32):
            c = np.rint(x[b * 32 + j] * iscale[b])
            q[b * 32 + j] = np.int8(c)
            total += np.int64(c)
        if s.shape[0]:
            s[b] = d[b] * np.float32(total)
    round_f16(d)                              # the block scale is stored as fp16
    if s.shape[0]:
        round_f16(s)


@njit(cache=True, inline="always")
def _code_buffers(n):
    """int8 codes and per-32 scales for n activations."""
    return np.empty(n, np.int8), np.empty(n // 32, np.float32)


@njit(cache=True, inline="always")
def _decode_codes(out, q, d):
    """out = the values of codes q with per-32 scales d."""
    for i in range(out.shape[0]):
        out[i] = d[i >> 5] * np.float32(q[i])


@njit(cache=True)
def q8_0_row(out, x):
    q, d = _code_buffers(x.shape[0])
    q8_codes(q, d, d[:0], x)
    _decode_codes(out, q, d)


@njit(cache=True, fastmath=False)
def q8_k_codes(q, d, x):
    """llama.cpp's quantize_row_q8_K_ref: int8 codes q and the f32 scale of each 256-block, written for each of its
    eight 32-blocks (d has one entry per 32)."""
    for b in range(x.shape[0] // 256):
        amax, vmax, bad = np.float32(0.0), np.float32(0.0), False
        for j in range(256):
            v = x[b * 256 + j]
            bad |= _not_finite(v)
            if abs(v) > amax:
                amax = abs(v)
                vmax = v
        scale = _poison(bad)
        if amax == 0:
            q[b * 256:b * 256 + 256] = 0
        else:
            iscale = np.float32(-127.0) / vmax
            scale += np.float32(1.0) / iscale
            for j in range(256):
                q[b * 256 + j] = np.int8(min(np.float32(127.0), np.float32(np.rint(iscale * x[b * 256 + j]))))
        d[8 * b:8 * b + 8] = scale


@njit(cache=True)
def q8_k_row(out, x):
    q, d = _code_buffers(x.shape[0])
    q8_k_codes(q, d, x)
    _decode_codes(out, q, d)


@njit(cache=True)
def f16_row(out, x):
    for i in range(x.shape[0]):
        out[i] = _nearest_f16(x[i])


@njit(cache=True)
def bf16_row(out, x):
    bits = x.view(np.uint32)
    ob = out.view(np.uint32)
    for i in range(x.shape[0]):
        b = bits[i]
        if (b & 0x7FFFFFFF) > 0x7F800000:          # NaN stays NaN (quiet)
            ob[i] = (b | 0x00400000) & 0xFFFF0000
        else:                                       # round to nearest even on the upper 16 bits
            ob[i] = ((b + (0x7FFF + ((b >> 16) & 1))) & 0xFFFF0000)


# One row at a time above (the decode step calls them directly); a matrix of rows (tokens) in parallel here.
@njit(cache=True, parallel=True)
def q8_0(out, x):
    for t in prange(x.shape[0]):
        q8_0_row(out[t], x[t])


@njit(cache=True, parallel=True)
def q8_k(out, x):
    for t in prange(x.shape[0]):
        q8_k_row(out[t], x[t])


@njit(cache=True, parallel=True)
def f16(out, x):
    for t in prange(x.shape[0]):
        f16_row(out[t], x[t])


@njit(cache=True, parallel=True)
def bf16(out, x):
    for t in prange(x.shape[0]):
        bf16_row(out[t], x[t])


# a scheme's name (formats/specs: TypeSpec.activation) -> its rounding of rows, and of one row
SCHEMES = {"q8_0": (q8_0, q8_0_row), "q8_k": (q8_k, q8_k_row), "f16": (f16, f16_row), "bf16": (bf16, bf16_row)}

# weight type -> how llama.cpp presents the activations to its dot product (absent: as they are, F32); VEC_DOT_ROW
# the same for one 1-D activation
VEC_DOT = {name: SCHEMES[s.activation][0] for name, s in SPECS.items() if s.activation is not None}
VEC_DOT_ROW = {name: SCHEMES[s.activation][1] for name, s in SPECS.items() if s.activation is not None}
