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
from .quant_common import (absmax_signed, f32, fp32_to_fp16, imatrix_weights, put_f16, put_u16, put_u32, qkx_search,
                           qx_search, roundf, sum_of_squares)

QK = 32
Q80 = block("Q8_0")
FLT_MAX = np.finfo(np.float32).max
# the imatrix paths' searches (quantize_row_*_impl)
Q4_0_SEARCH = qx_search(8)
Q5_0_SEARCH = qx_search(16)
Q4_1_SEARCH = qkx_search(15, -0.9, 0.05, 36, False, True)  # make_qkx3_quants
Q5_1_SEARCH = qkx_search(31, -0.9, 0.05, 36, False, True)


@njit(cache=True, error_model="numpy")
def _round_codes(L, x, m, d, offset, top):
    """L[j] = the code of x[j] on the grid m + d * (code - offset + 1/2), as quantize_row_*_ref rounds."""
    idd = f32(1.0) / d if d != 0 else f32(0.0)
    for j in range(QK):
        L[j] = min(top, np.int64((x[j] - m) * idd + offset))


@njit(cache=True, error_model="numpy")
def _pack_nibbles(dst, p, L):
    """Q4_0's and Q4_1's qs: element j in the low nibble of byte j, element j + 16 in its high one."""
    for j in range(16):
        dst[p + j] = np.int64(L[j]) | (np.int64(L[j + 16]) << 4)


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


@njit(cache=True, error_model="numpy")
def _by_absmax(x, L, bits):
    """quantize_row_q{4,5}_0_ref's block: d puts the element of largest magnitude on the grid's end -2^(bits-1)."""
    half = f32(1 << (bits - 1))
    _, mx = absmax_signed(x, QK)
    d = mx / -half
    _round_codes(L, x, f32(0.0), d, half + f32(0.5), (1 << bits) - 1)
    return d, f32(0.0)


@njit(cache=True, error_model="numpy")
def _by_range(x, L, bits):
    """quantize_row_q{4,5}_1_ref's block: (d, m) spanning the block's range."""
    top = (1 << bits) - 1
    mn, mx = FLT_MAX, -FLT_MAX
    for j in range(QK):
        mn, mx = min(mn, x[j]), max(mx, x[j])
    d = (mx - mn) / f32(top)
    _round_codes(L, x, mn, d, f32(0.5), top)
    return d, mn


@njit(cache=True, error_model="numpy")
def _searched(x, weight, L, Laux, bits, asymmetric):
    """quantize_row_*_impl's block, with importance weights: (d, m) by make_qx_quants or make_qkx3_quants."""
    if asymmetric:
        if bits == 5:
            d, neg_min = Q5_1_SEARCH(QK, x, weight, L, Laux)
        else:
            d, neg_min = Q4_1_SEARCH(QK, x, weight, L, Laux)
        return d, -neg_min
    if bits == 5:
        return Q5_0_SEARCH(QK, x, L, weight), f32(0.0)
    return Q4_0_SEARCH(QK, x, L, weight), f32(0.0)


def _quantizer(name, bits, asymmetric):
    """quantize_row_{name}_ref / _impl over rows (parallel): per 32-block its codes, then fp16 d (and m where the
    block has one) and the codes, packed as nibbles (Q4) or with the 5th bits in qh (Q5). The closure holds plain
    ints only: numba keys its disk cache by a pickle of them, and a dispatcher pickles differently in every process."""
    blk = block(name)
    size, d_at = blk.size, blk.d
    m_at = blk.m if asymmetric else -1
    codes_at = blk.qh if bits == 5 else blk.qs

    def quantize(out, x, qw):
        nb = x.shape[1] // QK
        has_qw = qw.shape[0] > 0
        for r in prange(x.shape[0]):
            xr = x[r]
            dst = out[r]
            L = np.empty(QK, np.uint8)
            Laux = np.empty(QK, np.uint8)
            weight = np.empty(QK, np.float32)
            sigma2 = sum_of_squares(xr, 0, xr.shape[0]) / f32(xr.shape[0]) if has_qw else f32(0.0)
            for b in range(nb):
                o = b * QK
                p = b * size
                xb = xr[o:o + QK]
                if has_qw:
                    imatrix_weights(weight, xr, o, QK, qw, sigma2)
                    d, m = _searched(xb, weight, L, Laux, bits, asymmetric)
                elif asymmetric:
                    d, m = _by_range(xb, L, bits)
                else:
                    d, m = _by_absmax(xb, L, bits)
                put_f16(dst, p + d_at, d)
                if asymmetric:
                    put_f16(dst, p + m_at, m)
                if bits == 5:
                    _pack_q5_low_high(dst, p + codes_at, L)
                else:
                    _pack_nibbles(dst, p + codes_at, L)
    quantize.__name__ = quantize.__qualname__ = f"quant_{name.lower()}"
    return njit(parallel=True, cache=True, error_model="numpy")(quantize)


quant_q4_0 = _quantizer("Q4_0", 4, False)
quant_q4_1 = _quantizer("Q4_1", 4, True)
quant_q5_0 = _quantizer("Q5_0", 5, False)
quant_q5_1 = _quantizer("Q5_1", 5, True)


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
