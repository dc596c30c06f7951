"""Legacy 32-element block quantizers Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, byte-identical with llama.cpp.

Without importance weights these are quantize_row_*_ref (one pass from the block's absmax or range); with them,
quantize_row_*_impl: weights qw[j] * sqrt(sigma2 + x[j]^2) with sigma2 the row's mean square, then make_qx_quants
(Q4_0, Q5_0) or make_qkx3_quants (Q4_1, Q5_1). Q8_0 ignores the importance weights, as llama.cpp does.

Every kernel has the signature kernel(out, x, qw): out uint8 (rows, row_bytes), x float32 (rows, cols), qw float32
(cols,) importance weights or an empty array for none.
"""
import numpy as np
from numba import njit, prange

from .blocks import block
from .quant_common import f32, fp32_to_fp16, put_f16, put_u16, put_u32, qkx_search, qx_search, roundf

QK = 32
Q40, Q41, Q50, Q51, Q80 = (block(name) for name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"))
FLT_MAX = np.finfo(np.float32).max
# the imatrix paths' searches (quantize_row_*_impl)
Q4_0_SEARCH = qx_search(8)
Q5_0_SEARCH = qx_search(16)
Q4_1_SEARCH = qkx_search(15, -0.9, 0.05, 36, False, True)  # make_qkx3_quants
Q5_1_SEARCH = qkx_search(31, -0.9, 0.05, 36, False, True)


@njit(cache=True, error_model="numpy")
def _absmax_signed(x, o, n):
    """(amax, the element that has it): the first one of largest |x|."""
    amax = f32(0.0)
    mx = f32(0.0)
    for j in range(o, o + n):
        if amax < abs(x[j]):
            amax = abs(x[j])
            mx = x[j]
    return amax, mx


@njit(cache=True, error_model="numpy")
def _min_max(x, o, n):
    mn = FLT_MAX
    mx = -mn
    for j in range(o, o + n):
        v = x[j]
        if v < mn:
            mn = v
        if v > mx:
            mx = v
    return mn, mx


@njit(cache=True, error_model="numpy")
def _row_sigma2(x):
    s = f32(0.0)
    for j in range(x.shape[0]):
        s += x[j] * x[j]
    return s / f32(x.shape[0])


@njit(cache=True, error_model="numpy")
def _block_weights(weight, x, o, qw, sigma2):
    for j in range(QK):
        weight[j] = qw[o + j] * np.sqrt(sigma2 + x[o + j] * x[o + j])


@njit(cache=True, error_model="numpy")
def _pack_q5_low_high(dst, p, L):
    """qh (u32: bit j = 5th bit of element j) at p, then the 16 nibble bytes (Q5_0's and Q5_1's qs follow qh)."""
    qh = 0
    for j in range(16):
        a = np.int64(L[j])
        b = np.int64(L[j + 16])
        dst[p + 4 + j] = (a & 0x0F) | ((b & 0x0F) << 4)
        qh |= ((a & 0x10) >> 4) << j
        qh |= ((b & 0x10) >> 4) << (j + 16)
    put_u32(dst, p, qh)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_q4_0(out, x, qw):
    nb = x.shape[1] // QK
    has_qw = qw.shape[0] > 0
    for r in prange(x.shape[0]):
        xr = x[r]
        dst = out[r]
        L = np.empty(QK, np.int8)
        weight = np.empty(QK, np.float32)
        sigma2 = _row_sigma2(xr) if has_qw else f32(0.0)
        for b in range(nb):
            o = b * QK
            p = b * Q40.size
            if has_qw:
                _block_weights(weight, xr, o, qw, sigma2)
                d = Q4_0_SEARCH(QK, xr[o:o + QK], L, weight)
                put_f16(dst, p + Q40.d, d)
                for j in range(16):
                    dst[p + Q40.qs + j] = np.int64(L[j]) | (np.int64(L[j + 16]) << 4)
                continue
            _, mx = _absmax_signed(xr, o, QK)
            d = mx / f32(-8.0)
            idd = f32(1.0) / d if d != 0 else f32(0.0)
            put_f16(dst, p + Q40.d, d)
            for j in range(16):
                x0 = xr[o + j] * idd
                x1 = xr[o + 16 + j] * idd
                q0 = min(15, np.int64(x0 + f32(8.5)))
                q1 = min(15, np.int64(x1 + f32(8.5)))
                dst[p + Q40.qs + j] = q0 | (q1 << 4)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_q4_1(out, x, qw):
    nb = x.shape[1] // QK
    has_qw = qw.shape[0] > 0
    for r in prange(x.shape[0]):
        xr = x[r]
        dst = out[r]
        L = np.empty(QK, np.uint8)
        Laux = np.empty(QK, np.uint8)
        weight = np.empty(QK, np.float32)
        sigma2 = _row_sigma2(xr) if has_qw else f32(0.0)
        for b in range(nb):
            o = b * QK
            p = b * Q41.size
            if has_qw:
                _block_weights(weight, xr, o, qw, sigma2)
                d, m = Q4_1_SEARCH(QK, xr[o:o + QK], weight, L, Laux)
                put_f16(dst, p + Q41.d, d)
                put_f16(dst, p + Q41.m, -m)
                for j in range(16):
                    dst[p + Q41.qs + j] = np.int64(L[j]) | (np.int64(L[j + 16]) << 4)
                continue
            mn, mx = _min_max(xr, o, QK)
            d = (mx - mn) / f32(15.0)
            idd = f32(1.0) / d if d != 0 else f32(0.0)
            put_f16(dst, p + Q41.d, d)
            put_f16(dst, p + Q41.m, mn)
            for j in range(16):
                x0 = (xr[o + j] - mn) * idd
                x1 = (xr[o + 16 + j] - mn) * idd
                q0 = min(15, np.int64(x0 + f32(0.5)))
                q1 = min(15, np.int64(x1 + f32(0.5)))
                dst[p + Q41.qs + j] = q0 | (q1 << 4)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_q5_0(out, x, qw):
    nb = x.shape[1] // QK
    has_qw = qw.shape[0] > 0
    for r in prange(x.shape[0]):
        xr = x[r]
        dst = out[r]
        L = np.empty(QK, np.int8)
        weight = np.empty(QK, np.float32)
        sigma2 = _row_sigma2(xr) if has_qw else f32(0.0)
        for b in range(nb):
            o = b * QK
            p = b * Q50.size
            if has_qw:
                _block_weights(weight, xr, o, qw, sigma2)
                d = Q5_0_SEARCH(QK, xr[o:o + QK], L, weight)
            else:
                _, mx = _absmax_signed(xr, o, QK)
                d = mx / f32(-16.0)
                idd = f32(1.0) / d if d != 0 else f32(0.0)
                for j in range(QK):
                    L[j] = min(31, np.int64(xr[o + j] * idd + f32(16.5)))
            put_f16(dst, p + Q50.d, d)
            _pack_q5_low_high(dst, p + Q50.qh, L)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_q5_1(out, x, qw):
    nb = x.shape[1] // QK
    has_qw = qw.shape[0] > 0
    for r in prange(x.shape[0]):
        xr = x[r]
        dst = out[r]
        L = np.empty(QK, np.uint8)
        Laux = np.empty(QK, np.uint8)
        weight = np.empty(QK, np.float32)
        sigma2 = _row_sigma2(xr) if has_qw else f32(0.0)
        for b in range(nb):
            o = b * QK
            p = b * Q51.size
            if has_qw:
                _block_weights(weight, xr, o, qw, sigma2)
                d, m = Q5_1_SEARCH(QK, xr[o:o + QK], weight, L, Laux)
                m = -m
            else:
                m, mx = _min_max(xr, o, QK)
                d = (mx - m) / f32(31.0)
                idd = f32(1.0) / d if d != 0 else f32(0.0)
                for j in range(QK):
                    L[j] = np.int64((xr[o + j] - m) * idd + f32(0.5))
            put_f16(dst, p + Q51.d, d)
            put_f16(dst, p + Q51.m, m)
            _pack_q5_low_high(dst, p + Q51.qh, L)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_q8_0(out, x, qw):
    nb = x.shape[1] // QK
    for r in prange(x.shape[0]):
        xr = x[r]
        dst = out[r]
        for b in range(nb):
            o = b * QK
            p = b * Q80.size
            amax = f32(0.0)
            for j in range(o, o + QK):
                v = abs(xr[j])
                amax = amax if amax > v else v
            d = amax / f32(127.0)
            idd = f32(1.0) / d if d != 0 else f32(0.0)
            put_u16(dst, p + Q80.d, fp32_to_fp16(d))
            for j in range(QK):
                dst[p + Q80.qs + j] = roundf(xr[o + j] * idd) & 0xFF


QUANTIZERS = {
    "Q4_0": quant_q4_0,
    "Q4_1": quant_q4_1,
    "Q5_0": quant_q5_0,
    "Q5_1": quant_q5_1,
    "Q8_0": quant_q8_0,
}
