"""Legacy 32-element blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (layouts in ggml-common.h).

Arithmetic is float32 throughout and in the reference's order (d * q, then + m), so results are bit-exact.
Each type is a block decoder _<type>(dst, o, src, s, tables) run over the rows by codecs_common.decode_blocks.
"""
import numpy as np
from numba import njit, prange

from .blocks import block
from .codecs_common import F16_TO_F32, decode_blocks, i8, u16, u32

Q40, Q41, Q50, Q51, Q80 = (block(name) for name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"))


@njit(cache=True, inline="always")
def _q5_code(qs, qh, j):
    """The 5-bit codes of elements j and j + 16: nibbles of qs, fifth bits j and j + 16 of qh."""
    q = np.int64(qs)
    return (q & 15) | (((qh >> j) & 1) << 4), (q >> 4) | (((qh >> (j + 16)) & 1) << 4)


@njit(cache=True, inline="always")
def _q4_0(dst, o, src, s, tables):  # d, qs[16]; x = (q - 8) d
    (f16,) = tables
    d = f16[u16(src, s + Q40.d)]
    for j in range(16):
        q = np.int64(src[s + Q40.qs + j])
        dst[o + j] = d * np.float32((q & 15) - 8)
        dst[o + 16 + j] = d * np.float32((q >> 4) - 8)


@njit(cache=True, inline="always")
def _q4_1(dst, o, src, s, tables):  # d, m, qs[16]; x = q d + m
    (f16,) = tables
    d = f16[u16(src, s + Q41.d)]
    m = f16[u16(src, s + Q41.m)]
    for j in range(16):
        q = np.int64(src[s + Q41.qs + j])
        dst[o + j] = d * np.float32(q & 15) + m
        dst[o + 16 + j] = d * np.float32(q >> 4) + m


@njit(cache=True, inline="always")
def _q5_0(dst, o, src, s, tables):  # d, qh (u32: bit j = 5th bit of element j), qs[16]; x = (q - 16) d
    (f16,) = tables
    d = f16[u16(src, s + Q50.d)]
    qh = u32(src, s + Q50.qh)
    for j in range(16):
        lo, hi = _q5_code(src[s + Q50.qs + j], qh, j)
        dst[o + j] = d * np.float32(lo - 16)
        dst[o + 16 + j] = d * np.float32(hi - 16)


@njit(cache=True, inline="always")
def _q5_1(dst, o, src, s, tables):  # d, m, qh, qs[16]; x = q d + m
    (f16,) = tables
    d = f16[u16(src, s + Q51.d)]
    m = f16[u16(src, s + Q51.m)]
    qh = u32(src, s + Q51.qh)
    for j in range(16):
        lo, hi = _q5_code(src[s + Q51.qs + j], qh, j)
        dst[o + j] = d * np.float32(lo) + m
        dst[o + 16 + j] = d * np.float32(hi) + m


@njit(cache=True, inline="always")
def _q8_0(dst, o, src, s, tables):  # d, int8 qs[32]; x = q d
    (f16,) = tables
    d = f16[u16(src, s + Q80.d)]
    for j in range(32):
        dst[o + j] = np.float32(i8(src[s + Q80.qs + j])) * d


@njit(parallel=True, cache=True)
def dequant_q4_0(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], Q40.size, 32, _q4_0, (f16,))


@njit(parallel=True, cache=True)
def dequant_q4_1(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], Q41.size, 32, _q4_1, (f16,))


@njit(parallel=True, cache=True)
def dequant_q5_0(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], Q50.size, 32, _q5_0, (f16,))


@njit(parallel=True, cache=True)
def dequant_q5_1(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], Q51.size, 32, _q5_1, (f16,))


@njit(parallel=True, cache=True)
def dequant_q8_0(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], Q80.size, 32, _q8_0, (f16,))


CODECS = {
    "Q4_0": (dequant_q4_0, (F16_TO_F32,)),
    "Q4_1": (dequant_q4_1, (F16_TO_F32,)),
    "Q5_0": (dequant_q5_0, (F16_TO_F32,)),
    "Q5_1": (dequant_q5_1, (F16_TO_F32,)),
    "Q8_0": (dequant_q8_0, (F16_TO_F32,)),
}
