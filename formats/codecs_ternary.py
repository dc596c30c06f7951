"""Ternary types: TQ1_0 (base-3 packed, 5 trits per byte) and TQ2_0 (2 bits per value), values {-1, 0, 1} * d.

TQ1_0 stores each trit sequence as a fixed-point fraction: trit p of byte x is ((x * 3**p mod 256) * 3) >> 8.
"""
import numpy as np
from numba import njit, prange

from .blocks import block
from .codecs_common import F16_TO_F32, decode_blocks, u16

TQ1, TQ2 = block("TQ1_0"), block("TQ2_0")


@njit(cache=True, inline="always")
def _trit(x, pow3):
    return ((((np.int64(x) * pow3) & 255) * 3) >> 8) - 1


@njit(cache=True, inline="always")
def _tq1_0(dst, o, src, s, tables):  # qs[48] (5 trits per byte), qh[4] (4 trits per byte), d last
    (f16,) = tables
    d = f16[u16(src, s + TQ1.d)]
    pow3 = 1
    for p in range(5):  # elements 0..159 from qs[0:32], 160..239 from qs[32:48]
        for j in range(32):
            dst[o + p * 32 + j] = d * np.float32(_trit(src[s + TQ1.qs + j], pow3))
        for j in range(16):
            dst[o + 160 + p * 16 + j] = d * np.float32(_trit(src[s + TQ1.qs + 32 + j], pow3))
        pow3 *= 3
    pow3 = 1
    for p in range(4):  # elements 240..255 from qh
        for j in range(4):
            dst[o + 240 + p * 4 + j] = d * np.float32(_trit(src[s + TQ1.qh + j], pow3))
        pow3 *= 3


@njit(cache=True, inline="always")
def _tq2_0(dst, o, src, s, tables):  # qs[64] (2 bits each, value q - 1), d last
    (f16,) = tables
    d = f16[u16(src, s + TQ2.d)]
    for e in range(256):  # element h*128 + l*32 + j: bits 2l of qs[h*32 + j]
        q = (np.int64(src[s + TQ2.qs + (e >> 7) * 32 + (e & 31)]) >> (2 * ((e >> 5) & 3))) & 3
        dst[o + e] = d * np.float32(q - 1)


@njit(parallel=True, cache=True)
def dequant_tq1_0(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], TQ1.size, 256, _tq1_0, (f16,))


@njit(parallel=True, cache=True)
def dequant_tq2_0(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], TQ2.size, 256, _tq2_0, (f16,))


CODECS = {
    "TQ1_0": (dequant_tq1_0, (F16_TO_F32,)),
    "TQ2_0": (dequant_tq2_0, (F16_TO_F32,)),
}
