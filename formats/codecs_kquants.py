"""K-quants: 256-element super-blocks Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (layouts in ggml-common.h).

Sub-block scales are formed as d * scale in float32 first, then applied as (d*scale) * q - (dmin*min), the
reference's order, so results are bit-exact. Each type is a block decoder _<type>(dst, o, src, s, tables) run over
the rows by codecs_common.decode_blocks.
"""
import numpy as np
from numba import njit, prange

from .blocks import block
from .codecs_common import F16_TO_F32, decode_blocks, i8, u16

Q2K, Q3K, Q4K, Q5K, Q6K = (block(name) for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"))


@njit(cache=True, inline="always")
def _scale_min_k4(src, p, k):
    """6-bit scale and min of sub-block k from the 12 packed bytes at src[p:] (Q4_K, Q5_K)."""
    if k < 4:
        return np.int64(src[p + k] & 63), np.int64(src[p + k + 4] & 63)
    sc = (np.int64(src[p + k + 4]) & 15) | ((np.int64(src[p + k - 4]) >> 2) & 0x30)
    mn = (np.int64(src[p + k + 4]) >> 4) | ((np.int64(src[p + k]) >> 2) & 0x30)
    return sc, mn


@njit(cache=True, inline="always")
def _q2_k(dst, o, src, s, tables):  # scales[16] (low nibble scale, high min), qs[64], d, dmin
    (f16,) = tables
    d = f16[u16(src, s + Q2K.d)]
    dmin = f16[u16(src, s + Q2K.dmin)]
    for k in range(16):  # element e = h*128 + l*32 + j, 2 bits at shift 2l of qs[h*32 + j]
        sc = np.int64(src[s + Q2K.scales + k])
        dl = d * np.float32(sc & 15)
        ml = dmin * np.float32(sc >> 4)
        h = k >> 3
        shift = 2 * ((k >> 1) & 3)
        j0 = 16 * (k & 1)
        for j in range(j0, j0 + 16):
            q = (np.int64(src[s + Q2K.qs + h * 32 + j]) >> shift) & 3
            dst[o + k * 16 + j - j0] = dl * np.float32(q) - ml


@njit(cache=True, inline="always")
def _q3_k(dst, o, src, s, tables):  # hmask[32], qs[64], scales[12] (16 x 6 bits, bias 32), d
    (f16,) = tables
    d = f16[u16(src, s + Q3K.d)]
    for k in range(16):
        lo = (np.int64(src[s + Q3K.scales + (k & 7)]) >> (4 * (k >> 3))) & 15
        hi = (np.int64(src[s + Q3K.scales + 8 + (k & 3)]) >> (2 * (k >> 2))) & 3
        dl = d * np.float32((lo | (hi << 4)) - 32)
        for e in range(k * 16, k * 16 + 16):
            j = e & 31
            ql = (np.int64(src[s + Q3K.qs + (e >> 7) * 32 + j]) >> (2 * ((e >> 5) & 3))) & 3
            hbit = (np.int64(src[s + Q3K.hmask + j]) >> (e >> 5)) & 1  # a clear high bit subtracts 4
            dst[o + e] = dl * np.float32(ql - ((hbit ^ 1) << 2))


@njit(cache=True, inline="always")
def _k4_blocks(dst, o, src, s, tables, blk, with_qh):
    """Q4_K (d, dmin, scales[12], qs[128]) and Q5_K (the same with qh[32] before qs: the high bit of element
    k*32 + j is bit k of qh[j]). Sub-block k: nibble (k & 1) of qs[(k >> 1)*32 + j]."""
    (f16,) = tables
    d = f16[u16(src, s + blk.d)]
    dmin = f16[u16(src, s + blk.dmin)]
    for k in range(8):
        sc, mn = _scale_min_k4(src, s + blk.scales, k)
        dk = d * np.float32(sc)
        mk = dmin * np.float32(mn)
        p = s + blk.qs + (k >> 1) * 32
        shift = 4 * (k & 1)
        for j in range(32):
            q = (np.int64(src[p + j]) >> shift) & 15
            if with_qh:
                q |= ((np.int64(src[s + Q5K.qh + j]) >> k) & 1) << 4
            dst[o + k * 32 + j] = dk * np.float32(q) - mk


@njit(cache=True, inline="always")
def _q4_k(dst, o, src, s, tables):
    _k4_blocks(dst, o, src, s, tables, Q4K, False)


@njit(cache=True, inline="always")
def _q5_k(dst, o, src, s, tables):
    _k4_blocks(dst, o, src, s, tables, Q5K, True)


@njit(cache=True, inline="always")
def _q6_k(dst, o, src, s, tables):  # ql[128], qh[64], int8 scales[16], d; q = 6 bits - 32
    (f16,) = tables
    d = f16[u16(src, s + Q6K.d)]
    for k in range(16):
        dk = d * np.float32(i8(src[s + Q6K.scales + k]))
        for e in range(k * 16, k * 16 + 16):
            a = e >> 7  # 128-element half; in it, element r: low nibble (r >> 6) of ql[a*64 + r % 64],
            r = e & 127  # two high bits at shift 2*(r >> 5) of qh[a*32 + r % 32]
            ql = (np.int64(src[s + Q6K.ql + a * 64 + (r & 63)]) >> (4 * (r >> 6))) & 15
            qh = (np.int64(src[s + Q6K.qh + a * 32 + (r & 31)]) >> (2 * (r >> 5))) & 3
            dst[o + e] = dk * np.float32((ql | (qh << 4)) - 32)


@njit(parallel=True, cache=True)
def dequant_q2_k(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], Q2K.size, 256, _q2_k, (f16,))


@njit(parallel=True, cache=True)
def dequant_q3_k(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], Q3K.size, 256, _q3_k, (f16,))


@njit(parallel=True, cache=True)
def dequant_q4_k(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], Q4K.size, 256, _q4_k, (f16,))


@njit(parallel=True, cache=True)
def dequant_q5_k(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], Q5K.size, 256, _q5_k, (f16,))


@njit(parallel=True, cache=True)
def dequant_q6_k(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], Q6K.size, 256, _q6_k, (f16,))


CODECS = {
    "Q2_K": (dequant_q2_k, (F16_TO_F32,)),
    "Q3_K": (dequant_q3_k, (F16_TO_F32,)),
    "Q4_K": (dequant_q4_k, (F16_TO_F32,)),
    "Q5_K": (dequant_q5_k, (F16_TO_F32,)),
    "Q6_K": (dequant_q6_k, (F16_TO_F32,)),
}
