"""Legacy 32-element blocks: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (layouts in ggml-common.h).

Arithmetic is float32 throughout and in the reference's order (d * q, then + m), so results are bit-exact.
"""
import numpy as np
from numba import njit, prange

from .codecs_common import F16_TO_F32, i8, u16, u32


@njit(parallel=True, cache=True)
def dequant_q4_0(out, raw, rows, f16):  # d, qs[16]; x = (q - 8) d
    nb = raw.shape[1] // 18
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 18
            o = b * 32
            d = f16[u16(src, s)]
            for j in range(16):
                q = np.int64(src[s + 2 + j])
                dst[o + j] = d * np.float32((q & 15) - 8)
                dst[o + 16 + j] = d * np.float32((q >> 4) - 8)


@njit(parallel=True, cache=True)
def dequant_q4_1(out, raw, rows, f16):  # d, m, qs[16]; x = q d + m
    nb = raw.shape[1] // 20
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 20
            o = b * 32
            d = f16[u16(src, s)]
            m = f16[u16(src, s + 2)]
            for j in range(16):
                q = np.int64(src[s + 4 + j])
                dst[o + j] = d * np.float32(q & 15) + m
                dst[o + 16 + j] = d * np.float32(q >> 4) + m


@njit(parallel=True, cache=True)
def dequant_q5_0(out, raw, rows, f16):  # d, qh (u32: bit j = 5th bit of element j), qs[16]; x = (q - 16) d
    nb = raw.shape[1] // 22
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 22
            o = b * 32
            d = f16[u16(src, s)]
            qh = u32(src, s + 2)
            for j in range(16):
                q = np.int64(src[s + 6 + j])
                lo = (q & 15) | (((qh >> j) & 1) << 4)
                hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4)
                dst[o + j] = d * np.float32(lo - 16)
                dst[o + 16 + j] = d * np.float32(hi - 16)


@njit(parallel=True, cache=True)
def dequant_q5_1(out, raw, rows, f16):  # d, m, qh, qs[16]; x = q d + m
    nb = raw.shape[1] // 24
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 24
            o = b * 32
            d = f16[u16(src, s)]
            m = f16[u16(src, s + 2)]
            qh = u32(src, s + 4)
            for j in range(16):
                q = np.int64(src[s + 8 + j])
                lo = (q & 15) | (((qh >> j) & 1) << 4)
                hi = (q >> 4) | (((qh >> (j + 16)) & 1) << 4)
                dst[o + j] = d * np.float32(lo) + m
                dst[o + 16 + j] = d * np.float32(hi) + m


@njit(parallel=True, cache=True)
def dequant_q8_0(out, raw, rows, f16):  # d, int8 qs[32]; x = q d
    nb = raw.shape[1] // 34
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 34
            o = b * 32
            d = f16[u16(src, s)]
            for j in range(32):
                dst[o + j] = np.float32(i8(src[s + 2 + j])) * d


CODECS = {
    "Q4_0": (dequant_q4_0, (F16_TO_F32,)),
    "Q4_1": (dequant_q4_1, (F16_TO_F32,)),
    "Q5_0": (dequant_q5_0, (F16_TO_F32,)),
    "Q5_1": (dequant_q5_1, (F16_TO_F32,)),
    "Q8_0": (dequant_q8_0, (F16_TO_F32,)),
}
