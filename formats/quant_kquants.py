"""K-quant quantizers Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (256-element super-blocks), byte-identical with llama.cpp.

Without importance weights each block follows quantize_row_*_ref: per sub-block make_qkx2_quants (Q2_K, Q4_K,
Q5_K), make_q3_quants (Q3_K) or make_qx_quants (Q6_K), then the sub-block scales are quantized against their
maximum. With them, quantize_row_*_impl: weights qw[j] * sqrt(sigma2 + x[j]^2), make_qkx3_quants / make_qx_quants
per sub-block, and the sub-block scales themselves searched with make_qp_quants / make_qx_quants (weighted by the
sub-block weight sums). Either way the elements are re-quantized against the stored (fp16-rounded) scales.

Kernel signature as in quant_legacy: kernel(out, x, qw) with qw float32 (cols,) or empty.
"""
import numpy as np
from numba import njit, prange

from .blocks import block
from .quant_common import (f32, fp16_to_fp32, fp32_to_fp16, GROUP_MAX_EPS, nearest_int, put_u16, q3_search,
                           qkx_lanes_search, qkx_search, qp_search, qx_search)

QK_K = 256
Q2K, Q3K, Q4K, Q5K, Q6K = (block(name) for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"))
# The searches each quantizer uses, as in ggml-quants.c (qkx2 = strict False, qkx3 = strict True).
Q2_K_REF = qkx_search(3, -0.5, 0.1, 15, True, False)
Q2_K_IM = qkx_lanes_search(3, -0.9, 0.05, 36, False, True)        # the 16 sub-blocks of a super-block at once
Q2_K_SCALES = qp_search(15)
Q3_K_REF = q3_search(4)
Q3_K_IM = qx_search(4)
Q3_K_SCALES = qx_search(32)
Q4_K_REF = qkx_search(15, -1.0, 0.1, 20, False, False)
Q4_K_IM = qkx_search(15, -0.9, 0.05, 36, False, True)
Q5_K_REF = qkx_search(31, -0.5, 0.1, 15, False, False)
Q5_K_IM = qkx_search(31, -0.9, 0.05, 36, False, True)
QK_K_SCALES = qp_search(63)
Q6_K_SEARCH = qx_search(32)


@njit(cache=True, error_model="numpy")
def _sum_sq(x, n):
    s = f32(0.0)
    for j in range(n):
        s += x[j] * x[j]
    return s


@njit(cache=True, inline="always", error_model="numpy")
def _imatrix_weights(weight, x, qw, o, n, sigma2):
    """quantize_row_*_impl's weights qw[j] * sqrt(sigma2 + x[j]^2) of the n elements at o, and their sum."""
    s = f32(0.0)
    for l in range(n):
        weight[l] = qw[o + l] * np.sqrt(sigma2 + x[o + l] * x[o + l])
        s += weight[l]
    return s


@njit(cache=True, inline="always", error_model="numpy")
def _scale_min_work(n_sub, sub_len):
    """One row's work arrays for the (scale, min) K-quants Q2_K, Q4_K, Q5_K: codes L, trial codes Laux, weights
    (a super-block's: Q2_K searches its sub-blocks at once), sub-block scales, mins and weight sums, and the scale
    and min codes Ls, Lm."""
    return (np.empty(QK_K, np.uint8), np.empty(sub_len, np.uint8), np.empty(QK_K, np.float32),
            np.empty(n_sub, np.float32), np.empty(n_sub, np.float32), np.empty(n_sub, np.float32),
            np.empty(n_sub, np.uint8), np.empty(n_sub, np.uint8))


@njit(cache=True, error_model="numpy")
def _pack_2bit(dst, p, L):
    """qs[64]: byte j/4 + l of each 128-half holds elements j+l, +32, +64, +96 at shifts 0, 2, 4, 6."""
    for j in range(0, QK_K, 128):
        for l in range(32):
            dst[p + j // 4 + l] = (np.int64(L[j + l]) | (np.int64(L[j + l + 32]) << 2)
                                   | (np.int64(L[j + l + 64]) << 4) | (np.int64(L[j + l + 96]) << 6)) & 0xFF


# ---------------------------------------------------------------------------------------------------------- Q2_K

@njit(cache=True, error_model="numpy")
def _q2_k_block(dst, x, qw, has_qw, work):
    L, Laux, weight, scales, mins, sw, Ls, Lm = work
    sc = dst[Q2K.scales:Q2K.qs]
    if has_qw:
        sigma2 = _sum_sq(x, QK_K) / f32(QK_K)
        for j in range(16):
            sw[j] = _imatrix_weights(weight[16 * j:], x, qw, 16 * j, 16, sigma2)
        Q2_K_IM(16, 16, x, weight, L, scales, mins)
        dm = Q2_K_SCALES(16, scales, Ls, sw)
        mm = Q2_K_SCALES(16, mins, Lm, sw)
        hd = fp32_to_fp16(dm)
        hm = fp32_to_fp16(mm)
        for j in range(16):
            sc[j] = (np.int64(Ls[j]) | (np.int64(Lm[j]) << 4)) & 0xFF
    else:
        max_scale = f32(0.0)
        max_min = f32(0.0)
        for j in range(16):
            for l in range(16):
                weight[l] = abs(x[16 * j + l])
            scales[j], mins[j] = Q2_K_REF(16, x[16 * j:16 * j + 16], weight, L[16 * j:16 * j + 16], Laux)
            if scales[j] > max_scale:
                max_scale = scales[j]
            if mins[j] > max_min:
                max_min = mins[j]
        if max_scale > 0:
            iscale = f32(15.0) / max_scale
            for j in range(16):
                sc[j] = nearest_int(iscale * scales[j]) & 0xFF
            hd = fp32_to_fp16(max_scale / f32(15.0))
        else:
            for j in range(16):
                sc[j] = 0
            hd = fp32_to_fp16(f32(0.0))
        if max_min > 0:
            iscale = f32(15.0) / max_min
            for j in range(16):
                sc[j] = (np.int64(sc[j]) | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
            hm = fp32_to_fp16(max_min / f32(15.0))
        else:
            hm = fp32_to_fp16(f32(0.0))
    put_u16(dst, Q2K.d, hd)
    put_u16(dst, Q2K.dmin, hm)
    dd = fp16_to_fp32(hd)
    dmin = fp16_to_fp32(hm)
    for j in range(16):
        d = dd * f32(sc[j] & 0xF)
        if d == 0:
            continue
        m = dmin * f32(sc[j] >> 4)
        for ii in range(16):
            L[16 * j + ii] = max(0, min(3, nearest_int((x[16 * j + ii] + m) / d)))
    _pack_2bit(dst, Q2K.qs, L)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_q2_k(out, x, qw):
    nb = x.shape[1] // QK_K
    has_qw = qw.shape[0] > 0
    for r in prange(x.shape[0]):
        work = _scale_min_work(16, 16)
        for b in range(nb):
            o = b * QK_K
            _q2_k_block(out[r, b * Q2K.size:(b + 1) * Q2K.size], x[r, o:o + QK_K], qw[o:o + QK_K], has_qw, work)


# ---------------------------------------------------------------------------------------------------------- Q3_K

@njit(cache=True, error_model="numpy")
def _q3_k_put_scale(sc, j, l):
    """Store the biased 6-bit scale l (0..63) of sub-block j into the 12 scale bytes at sc."""
    if j < 8:
        sc[j] = l & 0xF
    else:
        sc[j - 8] = np.int64(sc[j - 8]) | ((l & 0xF) << 4)
    sc[j % 4 + 8] = (np.int64(sc[j % 4 + 8]) | ((l >> 4) << (2 * (j // 4)))) & 0xFF


@njit(cache=True, error_model="numpy")
def _q3_k_get_scale(sc, j):
    s = np.int64(sc[j] & 0xF) if j < 8 else np.int64(sc[j - 8] >> 4)
    return (s | (((np.int64(sc[8 + j % 4]) >> (2 * (j // 4))) & 3) << 4)) - 32


@njit(cache=True, error_model="numpy")
def _q3_k_block(dst, x, qw, has_qw, L, weight, scales, sw, Ls):
    sc = dst[Q3K.scales:Q3K.d]
    for j in range(12):
        sc[j] = 0
    if has_qw:
        sigma2 = f32(2.0) * _sum_sq(x, QK_K) / f32(QK_K)
        for j in range(16):
            sw[j] = _imatrix_weights(weight, x, qw, 16 * j, 16, sigma2)
            scales[j] = Q3_K_IM(16, x[16 * j:16 * j + 16], L[16 * j:16 * j + 16], weight)
        d_block = Q3_K_SCALES(16, scales, Ls, sw)
        for j in range(16):
            _q3_k_put_scale(sc, j, np.int64(Ls[j]))
        hd = fp32_to_fp16(d_block)
    else:
        max_scale = f32(0.0)
        amax = f32(0.0)
        for j in range(16):
            scales[j] = Q3_K_REF(16, x[16 * j:16 * j + 16], L[16 * j:16 * j + 16])
            s = abs(scales[j])
            if s > amax:
                amax = s
                max_scale = scales[j]
        if max_scale != 0:
            iscale = f32(-32.0) / max_scale
            for j in range(16):
                l = nearest_int(iscale * scales[j])
                l = (l & 0xFF) - ((l & 0x80) << 1)  # int8_t
                _q3_k_put_scale(sc, j, max(-32, min(31, l)) + 32)
            hd = fp32_to_fp16(f32(1.0) / iscale)
        else:
            hd = fp32_to_fp16(f32(0.0))
    put_u16(dst, Q3K.d, hd)
    dd = fp16_to_fp32(hd)
    for j in range(16):
        d = dd * f32(_q3_k_get_scale(sc, j))
        if d == 0:
            continue
        for ii in range(16):
            L[16 * j + ii] = max(-4, min(3, nearest_int(x[16 * j + ii] / d))) + 4
    for m in range(32):
        dst[Q3K.hmask + m] = 0
    for j in range(QK_K):
        if L[j] > 3:
            dst[Q3K.hmask + j % 32] |= 1 << (j // 32)
            L[j] -= 4
    _pack_2bit(dst, Q3K.qs, L)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_q3_k(out, x, qw):
    nb = x.shape[1] // QK_K
    has_qw = qw.shape[0] > 0
    for r in prange(x.shape[0]):
        L = np.empty(QK_K, np.int8)
        weight = np.empty(16, np.float32)
        scales = np.empty(16, np.float32)
        sw = np.empty(16, np.float32)
        Ls = np.empty(16, np.int8)
        for b in range(nb):
            o = b * QK_K
            _q3_k_block(out[r, b * Q3K.size:(b + 1) * Q3K.size], x[r, o:o + QK_K], qw[o:o + QK_K], has_qw, L, weight,
                        scales, sw, Ls)


# --------------------------------------------------------------------------------------------------- Q4_K, Q5_K

@njit(cache=True, error_model="numpy")
def _put_scale_min_k4(sc, j, ls, lm):
    """6-bit scale ls and min lm of sub-block j into the 12 packed bytes at sc (uint8 truncation as in C)."""
    if j < 4:
        sc[j] = ls & 0xFF
        sc[j + 4] = lm & 0xFF
    else:
        sc[j + 4] = ((ls & 0xF) | ((lm & 0xF) << 4)) & 0xFF
        sc[j - 4] = (np.int64(sc[j - 4]) | ((ls >> 4) << 6)) & 0xFF
        sc[j] = (np.int64(sc[j]) | ((lm >> 4) << 6)) & 0xFF


@njit(cache=True, error_model="numpy")
def _get_scale_min_k4(sc, j):
    if j < 4:
        return np.int64(sc[j] & 63), np.int64(sc[j + 4] & 63)
    s = (np.int64(sc[j + 4]) & 0xF) | ((np.int64(sc[j - 4]) >> 6) << 4)
    m = (np.int64(sc[j + 4]) >> 4) | ((np.int64(sc[j]) >> 6) << 4)
    return s, m


@njit(cache=True, error_model="numpy")
def _pack_q4_k(dst, L):
    """qs[128]: byte j/2 + l of each 64 holds elements j + l (low nibble) and j + l + 32."""
    for j in range(0, QK_K, 64):
        for l in range(32):
            dst[Q4K.qs + j // 2 + l] = np.int64(L[j + l]) | (np.int64(L[j + l + 32]) << 4)


@njit(cache=True, error_model="numpy")
def _pack_q5_k(dst, L):
    """qh[32] (bit 2k and 2k+1 of byte j: the fifth bits of elements 64k + j and 64k + j + 32), qs[128]."""
    for j in range(32):
        dst[Q5K.qh + j] = 0
    for n in range(0, QK_K, 64):
        m1 = 1 << (n // 32)
        for j in range(32):
            l1 = np.int64(L[n + j])
            if l1 > 15:
                l1 -= 16
                dst[Q5K.qh + j] |= m1
            l2 = np.int64(L[n + j + 32])
            if l2 > 15:
                l2 -= 16
                dst[Q5K.qh + j] |= m1 << 1
            dst[Q5K.qs + n // 2 + j] = l1 | (l2 << 4)


@njit(cache=True, error_model="numpy")
def _qk_scale_min_block(dst, x, qw, has_qw, nmax, work):
    """One Q4_K (nmax 15) or Q5_K (nmax 31) block: sub-block searches, the packed 6-bit scales and mins at
    scales, then d and dmin, then the codes re-quantized against them and packed (the two blocks agree up to their
    qs)."""
    L, Laux, weights, scales, mins, sw, Ls, Lm = work
    sc = dst[Q4K.scales:Q4K.qs]
    if has_qw:
        sigma2 = f32(2.0) * _sum_sq(x, QK_K) / f32(QK_K)
        for j in range(8):
            sw[j] = _imatrix_weights(weights, x, qw, 32 * j, 32, sigma2)
            xs = x[32 * j:32 * j + 32]
            Lj = L[32 * j:32 * j + 32]
            if nmax == 15:
                scales[j], mins[j] = Q4_K_IM(32, xs, weights, Lj, Laux)
            else:
                scales[j], mins[j] = Q5_K_IM(32, xs, weights, Lj, Laux)
        d_block = QK_K_SCALES(8, scales, Ls, sw)
        m_block = QK_K_SCALES(8, mins, Lm, sw)
        for j in range(8):
            ls = np.int64(Ls[j])
            lm = np.int64(Lm[j])
            if nmax == 31:  # quantize_row_q5_K_impl clamps, q4_K's does not
                ls = min(63, ls)
                lm = min(63, lm)
            _put_scale_min_k4(sc, j, ls, lm)
        hd = fp32_to_fp16(d_block)
        hm = fp32_to_fp16(m_block)
    else:
        max_scale = f32(0.0)
        max_min = f32(0.0)
        for j in range(8):
            sum_x2 = f32(0.0)
            for l in range(32):
                sum_x2 += x[32 * j + l] * x[32 * j + l]
            av_x = np.sqrt(sum_x2 / f32(32.0))
            for l in range(32):
                weights[l] = av_x + abs(x[32 * j + l])
            xs = x[32 * j:32 * j + 32]
            Lj = L[32 * j:32 * j + 32]
            if nmax == 15:
                scales[j], mins[j] = Q4_K_REF(32, xs, weights, Lj, Laux)
            else:
                scales[j], mins[j] = Q5_K_REF(32, xs, weights, Lj, Laux)
            if scales[j] > max_scale:
                max_scale = scales[j]
            if mins[j] > max_min:
                max_min = mins[j]
        inv_scale = f32(63.0) / max_scale if max_scale > 0 else f32(0.0)
        inv_min = f32(63.0) / max_min if max_min > 0 else f32(0.0)
        for j in range(8):
            ls = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
            lm = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
            _put_scale_min_k4(sc, j, ls, lm)
        hd = fp32_to_fp16(max_scale / f32(63.0))
        hm = fp32_to_fp16(max_min / f32(63.0))
    put_u16(dst, Q4K.d, hd)
    put_u16(dst, Q4K.dmin, hm)
    dd = fp16_to_fp32(hd)
    dmin = fp16_to_fp32(hm)
    for j in range(8):
        s, m = _get_scale_min_k4(sc, j)
        d = dd * f32(s)
        if d == 0:
            continue
        dm = dmin * f32(m)
        for ii in range(32):
            L[32 * j + ii] = max(0, min(nmax, nearest_int((x[32 * j + ii] + dm) / d)))
    if nmax == 15:
        _pack_q4_k(dst, L)
    else:
        _pack_q5_k(dst, L)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_q4_k(out, x, qw):
    nb = x.shape[1] // QK_K
    has_qw = qw.shape[0] > 0
    for r in prange(x.shape[0]):
        work = _scale_min_work(8, 32)
        for b in range(nb):
            o = b * QK_K
            dst = out[r, b * Q4K.size:(b + 1) * Q4K.size]
            _qk_scale_min_block(dst, x[r, o:o + QK_K], qw[o:o + QK_K], has_qw, 15, work)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_q5_k(out, x, qw):
    nb = x.shape[1] // QK_K
    has_qw = qw.shape[0] > 0
    for r in prange(x.shape[0]):
        work = _scale_min_work(8, 32)
        for b in range(nb):
            o = b * QK_K
            dst = out[r, b * Q5K.size:(b + 1) * Q5K.size]
            _qk_scale_min_block(dst, x[r, o:o + QK_K], qw[o:o + QK_K], has_qw, 31, work)


# ---------------------------------------------------------------------------------------------------------- Q6_K

@njit(cache=True, error_model="numpy")
def _q6_k_block(dst, x, qw, has_qw, L, weight, scales):
    max_scale = f32(0.0)
    max_abs_scale = f32(0.0)
    for ib in range(16):
        if has_qw:  # the importance weights as they are (no sigma2 term, unlike the other K-quants)
            w = qw[16 * ib:16 * ib + 16]
        else:
            for j in range(16):
                weight[j] = x[16 * ib + j] * x[16 * ib + j]
            w = weight
        scales[ib] = Q6_K_SEARCH(16, x[16 * ib:16 * ib + 16], L[16 * ib:16 * ib + 16], w)
        a = abs(scales[ib])
        if a > max_abs_scale:
            max_abs_scale = a
            max_scale = scales[ib]
    if max_abs_scale < GROUP_MAX_EPS:
        for k in range(Q6K.size):
            dst[k] = 0
        put_u16(dst, Q6K.d, fp32_to_fp16(f32(0.0)))
        return
    iscale = f32(-128.0) / max_scale
    hd = fp32_to_fp16(f32(1.0) / iscale)
    put_u16(dst, Q6K.d, hd)
    dd = fp16_to_fp32(hd)
    for ib in range(16):
        dst[Q6K.scales + ib] = min(127, nearest_int(iscale * scales[ib])) & 0xFF
    for j in range(16):
        s = np.int64(dst[Q6K.scales + j])
        d = dd * f32(s - ((s & 0x80) << 1))
        if d == 0:
            continue
        for ii in range(16):
            L[16 * j + ii] = max(-32, min(31, nearest_int(x[16 * j + ii] / d))) + 32
    for j in range(0, QK_K, 128):
        for l in range(32):
            a = np.int64(L[j + l])
            b = np.int64(L[j + l + 32])
            c = np.int64(L[j + l + 64])
            e = np.int64(L[j + l + 96])
            dst[Q6K.ql + j // 2 + l] = (a & 0xF) | ((c & 0xF) << 4)
            dst[Q6K.ql + j // 2 + l + 32] = (b & 0xF) | ((e & 0xF) << 4)
            dst[Q6K.qh + j // 4 + l] = ((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6)) & 0xFF


@njit(parallel=True, cache=True, error_model="numpy")
def quant_q6_k(out, x, qw):
    nb = x.shape[1] // QK_K
    has_qw = qw.shape[0] > 0
    for r in prange(x.shape[0]):
        L = np.empty(QK_K, np.int8)
        weight = np.empty(16, np.float32)
        scales = np.empty(16, np.float32)
        for b in range(nb):
            o = b * QK_K
            _q6_k_block(out[r, b * Q6K.size:(b + 1) * Q6K.size], x[r, o:o + QK_K], qw[o:o + QK_K], has_qw, L, weight,
                        scales)


QUANTIZERS = {
    "Q2_K": quant_q2_k,
    "Q3_K": quant_q3_k,
    "Q4_K": quant_q4_k,
    "Q5_K": quant_q5_k,
    "Q6_K": quant_q6_k,
}
