"""Non-linear 4-bit quantizers IQ4_NL (32-element blocks) and IQ4_XS (256-element super-blocks with 6-bit
sub-block scales), following llama.cpp's quantize_row_iq4_nl_impl step for step (so the bytes match too).

Per 32 elements: weights x^2 (or qw * sqrt(sigma2 + x^2) with importance weights), a first scale from the
largest-magnitude element mapped to the grid's end, the least-squares scale of the nearest grid points, then 15
trial scales around it keeping the best weighted fit. IQ4_XS then quantizes the 8 sub-block scales to 6 bits
against their largest and re-picks the grid points with the stored scale.

Kernel signature as in quant_legacy: kernel(out, x, qw) with qw float32 (cols,) or empty.
"""
import numpy as np
from gguf.quants import IQ4_NL
from numba import njit, prange

from .blocks import block
from .quant_common import f32, GROUP_MAX_EPS, nearest_int, put_f16, put_u16

IQ4NL, IQ4XS = block("IQ4_NL"), block("IQ4_XS")

KVALUES = np.array(IQ4_NL.kvalues, dtype=np.float32)  # the 16 grid points, ascending
NTRY = 7


@njit(cache=True, error_model="numpy")
def _best_index(values, x):
    """Index of the grid point nearest to x (ties to the upper one), by bisection as best_index_int8."""
    if x <= values[0]:
        return 0
    if x >= values[15]:
        return 15
    ml = 0
    mu = 15
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < values[mav]:
            mu = mav
        else:
            ml = mav
    return mu - 1 if x - values[mu - 1] < values[mu] - x else mu


@njit(cache=True, error_model="numpy")
def _block_scale(x, o, weight, L, values):
    """Best scale for the 32 elements x[o:o+32] with their weights; writes the grid indices of the first fit to
    L[o:o+32] (IQ4_NL keeps none of them, IQ4_XS rewrites them all)."""
    amax = f32(0.0)
    mx = f32(0.0)
    for j in range(32):
        ax = abs(x[o + j])
        if ax > amax:
            amax = ax
            mx = x[o + j]
    if amax < GROUP_MAX_EPS:
        return f32(0.0)
    d = -mx / values[0]
    idd = f32(1.0) / d
    sumqx = f32(0.0)
    sumq2 = f32(0.0)
    for j in range(32):
        l = _best_index(values, idd * x[o + j])
        L[o + j] = l
        q = values[l]
        w = weight[j]
        sumqx += w * q * x[o + j]
        sumq2 += w * q * q
    d = sumqx / sumq2 if sumq2 > 0 else f32(0.0)
    best = d * sumqx
    for itry in range(-NTRY, NTRY + 1):
        idd = (f32(itry) + values[0]) / mx
        sumqx = f32(0.0)
        sumq2 = f32(0.0)
        for j in range(32):
            q = values[_best_index(values, idd * x[o + j])]
            w = weight[j]
            sumqx += w * q * x[o + j]
            sumq2 += w * q * q
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            d = sumqx / sumq2
            best = d * sumqx
    return d


@njit(cache=True, error_model="numpy")
def _sigma2(x, n):
    s = f32(0.0)
    for j in range(n):
        s += x[j] * x[j]
    return s * (f32(2.0) / f32(n))


@njit(cache=True, error_model="numpy")
def _weights(weight, x, o, qw, has_qw, sigma2):
    for j in range(32):
        v = x[o + j]
        weight[j] = qw[o + j] * np.sqrt(sigma2 + v * v) if has_qw else v * v


@njit(cache=True, error_model="numpy")
def _pack_nibbles(dst, p, L, n):
    for i in range(n // 32):
        for j in range(16):
            dst[p + 16 * i + j] = np.int64(L[32 * i + j]) | (np.int64(L[32 * i + 16 + j]) << 4)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_iq4_nl(out, x, qw):
    nb = x.shape[1] // 32
    has_qw = qw.shape[0] > 0
    values = KVALUES
    for r in prange(x.shape[0]):
        L = np.empty(32, np.uint8)
        weight = np.empty(32, np.float32)
        for b in range(nb):
            xb = x[r, 32 * b:32 * b + 32]
            dst = out[r, IQ4NL.size * b:IQ4NL.size * (b + 1)]
            _weights(weight, xb, 0, qw[32 * b:32 * b + 32], has_qw, _sigma2(xb, 32))
            d = _block_scale(xb, 0, weight, L, values)
            put_f16(dst, IQ4NL.d, d)
            idd = f32(1.0) / d if d != 0 else f32(0.0)
            for j in range(32):
                L[j] = _best_index(values, idd * xb[j])
            _pack_nibbles(dst, IQ4NL.qs, L, 32)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_iq4_xs(out, x, qw):  # d @0, u16 scales_h @2, scales_l[4] @4, qs[128] @8
    nb = x.shape[1] // 256
    has_qw = qw.shape[0] > 0
    values = KVALUES
    for r in prange(x.shape[0]):
        L = np.empty(256, np.uint8)
        weight = np.empty(32, np.float32)
        scales = np.empty(8, np.float32)
        for b in range(nb):
            xb = x[r, 256 * b:256 * b + 256]
            qwb = qw[256 * b:256 * b + 256]
            dst = out[r, IQ4XS.size * b:IQ4XS.size * (b + 1)]
            sigma2 = _sigma2(xb, 256)
            max_scale = f32(0.0)
            amax_scale = f32(0.0)
            for ib in range(8):
                _weights(weight, xb, 32 * ib, qwb, has_qw, sigma2)
                scales[ib] = _block_scale(xb, 32 * ib, weight, L, values)
                a = abs(scales[ib])
                if a > amax_scale:
                    amax_scale = a
                    max_scale = scales[ib]
            d = -max_scale / f32(32.0)
            put_f16(dst, IQ4XS.d, d)
            idd = f32(1.0) / d if d != 0 else f32(0.0)
            scales_h = 0
            for ib in range(8):
                l = max(-32, min(31, nearest_int(idd * scales[ib])))
                dl = d * f32(l)
                idl = f32(1.0) / dl if dl != 0 else f32(0.0)
                for j in range(32):
                    L[32 * ib + j] = _best_index(values, idl * xb[32 * ib + j])
                l += 32
                if ib % 2 == 0:
                    dst[IQ4XS.scales_l + ib // 2] = l & 0xF
                else:
                    dst[IQ4XS.scales_l + ib // 2] |= (l & 0xF) << 4
                scales_h |= (l >> 4) << (2 * ib)
            put_u16(dst, IQ4XS.scales_h, scales_h)
            _pack_nibbles(dst, IQ4XS.qs, L, 256)


QUANTIZERS = {
    "IQ4_NL": quant_iq4_nl,
    "IQ4_XS": quant_iq4_xs,
}
