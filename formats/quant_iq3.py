"""3-bit lattice quantizers IQ3_XXS (256-point grid) and IQ3_S (512-point grid), following llama.cpp's
quantize_row_iq3_xxs_impl / quantize_row_iq3_s_impl step for step (so the bytes match too).

Per 256-element super-block: weights x^2 (or qw * sqrt(sigma2 + x^2) with importance weights, sigma2 = 2 mean x^2).
Per 32-element sub-block the signs are split off (xval = |x|; IQ3_XXS keeps an even number of minus signs per 8
elements by flipping back the element of least weight * x^2, since its 7 stored sign bits imply the eighth), then
31 (IQ3_XXS) or 19 (IQ3_S) trial inverse scales (15 + 0.2 k) / max map each group of 4 to levels 0..7; a pattern
off the grid is replaced by its best weighted neighbour (the precomputed lists of quant_iq_grids). The trial with
the best weighted least-squares fit wins; groups that were off the grid there are re-snapped with that scale
(IQ3_S re-snaps every group) and the scale refitted. The super-block scale is max/31 (stored times a fudge factor,
1.0125 or 1.033) and the sub-block scales are 4-bit odd multiples of it.

Replicated quirks of the reference: IQ3_XXS skips sub-blocks with max |x| < 1e-8 (grid index 0, no signs) and
zeroes the whole block when every sub-block scale is 0; IQ3_S skips only max == 0 and then does not advance its
qs/signs write positions, so the following sub-blocks' grid indices and signs land shifted down (their high index
bits in qh stay at the true position), and a block whose scales are all 0 keeps its indices and signs with d = 0.

Kernel signature as in quant_legacy: kernel(out, x, qw, grid, kmap, neighbours) with qw float32 (cols,) or empty
and the tables of quant_iq_grids.grid_tables; QUANTIZERS wraps them to kernel(out, x, qw).
"""
import numpy as np
from numba import njit, prange

from .blocks import block
from .quant_common import (f32, abs_and_even_signs, abs_and_signs, grid_index, imatrix_weights, max_of, nearest_int,
                           odd_code_fit, put_f16, put_u32, scale_level, sqrt_weights, sum_of_squares)
from .quant_iq_grids import grid_tables

IQ3XXS, IQ3S = block("IQ3_XXS"), block("IQ3_S")

GROUP_MAX_EPS_IQ3_XXS = f32(1e-8)
K_MAX_Q = 8  # levels 0..7, codes 2l+1 = 1..15

_JIT = dict(cache=True, error_model="numpy")


@njit(inline="always", **_JIT)
def _best_neighbour(neighbours, off, grid, xval, waux, o, scale, L):
    """iq3_find_best_neighbour: the listed grid point of least weighted squared error (the first of equals);
    writes its levels to L[o:o+4] and returns its index."""
    n = np.int64(neighbours[off])
    best_d2 = f32(np.finfo(np.float32).max)
    gi = -1
    for j in range(1, n + 1):
        idx = np.int64(neighbours[off + j])
        d2 = f32(0.0)
        for i in range(4):
            q = f32(grid[idx, i])
            diff = scale * q - xval[o + i]
            d2 += waux[o + i] * diff * diff
        if d2 < best_d2:
            best_d2 = d2
            gi = idx
    for i in range(4):
        L[o + i] = (np.int64(grid[gi, i]) - 1) // 2
    return gi


@njit(inline="always", **_JIT)
def _snap(xval, o, idd):
    """The level pattern of xval[o:o+4] at inverse scale idd (levels packed 3 bits apart)."""
    u = 0
    for i in range(4):
        l = nearest_int(f32(0.5) * (idd * xval[o + i] - f32(1.0)))
        u |= max(0, min(K_MAX_Q - 1, l)) << (3 * i)
    return u


@njit(inline="always", **_JIT)
def _sub_block_scale(xval, weight, waux, L, Laux, on_grid, on_grid_aux, grid, kmap, neighbours, mx, ntry,
                     init_on_grid, resnap_all):
    """The trial-scale search of one 32-element sub-block (max xval = mx > 0); leaves the levels in L."""
    best = f32(0.0)
    scale = mx / f32(2 * K_MAX_Q - 1)
    for k in range(8):
        on_grid[k] = init_on_grid
    for is_ in range(-ntry, ntry + 1):
        idd = (f32(2 * K_MAX_Q - 1) + f32(is_) * f32(0.2)) / mx
        this_scale = f32(1.0) / idd
        for k in range(8):
            u = 0
            for i in range(4):
                l = max(0, min(K_MAX_Q - 1, nearest_int(f32(0.5) * (idd * xval[4 * k + i] - f32(1.0)))))
                Laux[4 * k + i] = l
                u |= l << (3 * i)
            gi = kmap[u]
            on_grid_aux[k] = True
            if gi < 0:
                on_grid_aux[k] = False
                _best_neighbour(neighbours, -np.int64(gi) - 1, grid, xval, waux, 4 * k, this_scale, Laux)
        sumqx, sumq2 = odd_code_fit(weight, xval, Laux, 32)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            for i in range(32):
                L[i] = Laux[i]
            for k in range(8):
                on_grid[k] = on_grid_aux[k]
    n_not_on_grid = 0
    for k in range(8):
        if not on_grid[k]:
            n_not_on_grid += 1
    if n_not_on_grid > 0 and scale > 0:
        idd = f32(1.0) / scale
        for k in range(8):
            if on_grid[k] and not resnap_all:
                continue
            u = _snap(xval, 4 * k, idd)
            gi = np.int64(kmap[u])
            if gi < 0:
                gi = _best_neighbour(neighbours, -gi - 1, grid, xval, waux, 4 * k, scale, L)
            for i in range(4):
                L[4 * k + i] = (np.int64(grid[gi, i]) - 1) // 2
        sumqx, sumq2 = odd_code_fit(weight, xval, L, 32)
        if sumq2 > 0:
            scale = sumqx / sumq2
    return scale


@njit(inline="always", **_JIT)
def _grid_index(kmap, L, o):
    """The grid index of the 4 levels L[o:o+4]; >= 0 by construction (the reference aborts otherwise; the kernels
    check)."""
    return grid_index(kmap, L, o, 4, 3)


@njit(inline="always", **_JIT)
def _weights(weight, waux, xb, o, qwb, has_qw, sigma2):
    """A sub-block's weights (importance weights, or x^2 without them) and their square roots."""
    if has_qw:
        imatrix_weights(weight, xb, o, 32, qwb, sigma2)
    else:
        for i in range(32):
            v = xb[o + i]
            weight[i] = v * v
    sqrt_weights(waux, weight, 32)


@njit(inline="always", **_JIT)
def _sigma2(xb):
    return f32(2.0) * sum_of_squares(xb, 0, 256) / f32(256.0)



@njit(parallel=True, **_JIT)
def quant_iq3_xxs_kernel(out, x, qw, grid, kmap, neighbours):  # d @0, grid indices[64] @2, u32 scales+signs[8] @66
    nb = x.shape[1] // 256
    has_qw = qw.shape[0] > 0
    off_grid = np.zeros(x.shape[0], np.bool_)
    for r in prange(x.shape[0]):
        scales = np.empty(8, np.float32)
        weight = np.empty(32, np.float32)
        waux = np.empty(32, np.float32)
        xval = np.empty(32, np.float32)
        L = np.empty(32, np.int64)
        Laux = np.empty(32, np.int64)
        on_grid = np.empty(8, np.bool_)
        on_grid_aux = np.empty(8, np.bool_)
        sas = np.empty(8, np.int64)
        for b in range(nb):
            xb = x[r, 256 * b:256 * b + 256]
            qwb = qw[256 * b:256 * b + 256] if has_qw else qw
            dst = out[r, IQ3XXS.size * b:IQ3XXS.size * (b + 1)]
            for j in range(IQ3XXS.size):
                dst[j] = 0
            sigma2 = _sigma2(xb)
            max_scale = f32(0.0)
            for ib in range(8):
                sas[ib] = 0
                o = 32 * ib
                _weights(weight, waux, xb, o, qwb, has_qw, sigma2)
                signs = abs_and_even_signs(xb, o, weight, xval, 32)  # 7 bits per group of 8, at 7 k
                mx = max_of(xval, 32)
                for i in range(32):
                    L[i] = 0
                if mx < GROUP_MAX_EPS_IQ3_XXS:
                    scales[ib] = f32(0.0)
                    continue
                scale = _sub_block_scale(xval, weight, waux, L, Laux, on_grid, on_grid_aux, grid, kmap, neighbours,
                                         mx, 15, True, False)
                if scale < 0:
                    scale = -scale
                    signs ^= 0x0FFFFFFF  # each group's 7 bits inverted
                for k in range(8):
                    gi = _grid_index(kmap, L, 4 * k)
                    off_grid[r] |= gi < 0
                    dst[IQ3XXS.qs + 8 * ib + k] = gi
                sas[ib] = signs
                scales[ib] = scale
                max_scale = max_scale if max_scale > scale else scale
            if not max_scale:
                for j in range(IQ3XXS.size):
                    dst[j] = 0
                continue
            d = max_scale / f32(31.0)
            put_f16(dst, IQ3XXS.d, d * f32(1.0125))
            idd = f32(1.0) / d
            for ib in range(8):
                l = scale_level(idd, scales[ib], 15)
                put_u32(dst, IQ3XXS.sas + 4 * ib, sas[ib] | (l << 28))
    if off_grid.any():
        raise ValueError("IQ3_XXS: a quantized point is not on the grid")


@njit(parallel=True, **_JIT)
def quant_iq3_s_kernel(out, x, qw, grid, kmap, neighbours):  # d @0, qs[64] @2, qh[8] @66, signs[32] @74, scales[4] @106
    nb = x.shape[1] // 256
    has_qw = qw.shape[0] > 0
    off_grid = np.zeros(x.shape[0], np.bool_)
    for r in prange(x.shape[0]):
        scales = np.empty(8, np.float32)
        weight = np.empty(32, np.float32)
        waux = np.empty(32, np.float32)
        xval = np.empty(32, np.float32)
        L = np.empty(32, np.int64)
        Laux = np.empty(32, np.int64)
        on_grid = np.empty(8, np.bool_)
        on_grid_aux = np.empty(8, np.bool_)
        for b in range(nb):
            xb = x[r, 256 * b:256 * b + 256]
            qwb = qw[256 * b:256 * b + 256] if has_qw else qw
            dst = out[r, IQ3S.size * b:IQ3S.size * (b + 1)]
            for j in range(IQ3S.size):
                dst[j] = 0
            qs = IQ3S.qs  # the reference's write positions: not advanced past a skipped (all-zero) sub-block
            sp = IQ3S.signs
            sigma2 = _sigma2(xb)
            max_scale = f32(0.0)
            for ib in range(8):
                o = 32 * ib
                _weights(weight, waux, xb, o, qwb, has_qw, sigma2)
                signs = abs_and_signs(xb, o, xval, 32)  # all 8 signs of each group, group k in byte k
                mx = max_of(xval, 32)
                for i in range(32):
                    L[i] = 0
                if not mx:
                    scales[ib] = f32(0.0)
                    continue
                scale = _sub_block_scale(xval, weight, waux, L, Laux, on_grid, on_grid_aux, grid, kmap, neighbours,
                                         mx, 9, False, True)
                if scale < 0:
                    scale = -scale
                    signs ^= 0xFFFFFFFF
                for k in range(8):
                    gi = _grid_index(kmap, L, 4 * k)
                    off_grid[r] |= gi < 0
                    dst[qs + k] = gi & 255
                    dst[IQ3S.qh + ib] |= (gi >> 8) << k
                qs += 8
                put_u32(dst, sp, signs)
                sp += 4
                scales[ib] = scale
                max_scale = max_scale if max_scale > scale else scale
            if not max_scale:
                continue
            d = max_scale / f32(31.0)
            put_f16(dst, IQ3S.d, d * f32(1.033))
            idd = f32(1.0) / d
            for ib in range(0, 8, 2):
                l1 = scale_level(idd, scales[ib], 15)
                l2 = scale_level(idd, scales[ib + 1], 15)
                dst[IQ3S.scales + ib // 2] = l1 | (l2 << 4)
    if off_grid.any():
        raise ValueError("IQ3_S: a quantized point is not on the grid")


def _with_tables(kernel, type_name):
    def quantize(out, x, qw):
        t = grid_tables(type_name)
        kernel(out, x, qw, t.grid, t.map, t.neighbours)
    quantize.__name__ = kernel.__name__.replace("_kernel", "")
    quantize.__doc__ = f"{type_name} rows: kernel(out, x, qw) with the grid tables of quant_iq_grids."
    return quantize


quant_iq3_xxs = _with_tables(quant_iq3_xxs_kernel, "IQ3_XXS")
quant_iq3_s = _with_tables(quant_iq3_s_kernel, "IQ3_S")

QUANTIZERS = {
    "IQ3_XXS": quant_iq3_xxs,
    "IQ3_S": quant_iq3_s,
}
