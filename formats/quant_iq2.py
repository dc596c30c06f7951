"""2-bit lattice quantizers IQ2_XXS, IQ2_XS and IQ2_S (256-element super-blocks), following llama.cpp's
quantize_row_iq2_xxs_impl / quantize_row_iq2_xs_impl / quantize_row_iq2_s_impl step for step (so the bytes match).

Every 8 elements become one point of an E8-like grid (levels 0..2 per element, stored as the codes 2l+1) times a
sub-block scale, with the signs kept apart:
- weights qw * sqrt(sigma2 + x^2) from the importance matrix (IQ2_S without one: sigma2/4 + x^2); the grid is fitted
  to |x|. IQ2_XXS and IQ2_XS keep 7 sign bits per 8 elements, the 8th implied by an even sign count: with an odd
  count, the element of least weight * x^2 takes the wrong sign (its |x| is negated before the fit). IQ2_S keeps
  all 8 signs.
- per sub-block (32 elements for IQ2_XXS, 16 for the others) trial inverse scales (5 + 0.1 k) / max, k in -6..6
  around make_qp_quants' scale (IQ2_XXS) or -9..9 around the largest |x| (IQ2_XS, IQ2_S): each element is rounded
  to a level, a level pattern off the grid is replaced by the neighbour (from the precomputed list) nearest in the
  sqrt(weight)-weighted distance, and the least-squares scale of the best trial is kept. The points are then
  re-picked with that scale (IQ2_XXS: all groups; the others: only the groups that had been off the grid) and the
  scale refitted.
- the sub-block scales are stored as 4-bit l with scale ~ (2 l + 1) d, d = max_scale / 31 the fp16 super-block
  scale (IQ2_S stores d * 0.9875).

The neighbour search is the hot loop; _snap computes each of its 24 possible weighted squared differences once and
sums four candidates side by side, which changes no float operation (the C code's distances are bit for bit the
same), only how often they are evaluated.

Kernel signature as in quant_legacy: kernel(out, x, qw) with qw float32 (cols,) or empty; IQ2_XXS and IQ2_XS need
the importance matrix (llama.cpp asserts one) and refuse an empty qw.
"""
from functools import lru_cache

import numpy as np
from numba import njit, prange

from .blocks import block
from .quant_common import (f32, GROUP_MAX_EPS, abs_and_even_signs, abs_and_signs, grid_index, imatrix_weights, max_of,
                           nearest_int, odd_code_fit, put_f16, put_u16, put_u32, qp_search, scale_level, sqrt_weights,
                           sum_of_squares)
from .quant_iq_grids import grid_tables

IQ2XXS, IQ2XS, IQ2S = block("IQ2_XXS"), block("IQ2_XS"), block("IQ2_S")

KMAXQ = 3
GROUP_MAX_EPS_IQ2_S = f32(1e-8)
FLT_MAX = f32(np.finfo(np.float32).max)
QP_SEARCH = qp_search(KMAXQ + 1)  # make_qp_quants(32, kMaxQ + 1, ...) of IQ2_XXS

_JIT = dict(cache=True, error_model="numpy")


@njit(**_JIT)
def _snap(xval, waux, o, iscale, scale, L, terms, offs, kmap, nbrs):
    """The grid point for the 8 values xval[o:o+8] at inverse scale iscale: the rounded levels if they form a grid
    point, else iq2_find_best_neighbour's choice among the pattern's neighbours (the first strict minimum of
    sum_i waux_i (scale * code_i - xval_i)^2). Writes the levels to L[o:o+8]; returns (grid index, on the grid).

    offs[g, i] = 3 i + the level of grid point g at i: each of the 24 possible terms waux_i (scale * code - xval_i)^2 is
    computed once into terms (the same float operations as the reference's inner loop), and a candidate's distance
    is the sequential sum of its 8 terms; four candidates are summed side by side, compared in list order.
    """
    u = 0
    for i in range(8):
        l = nearest_int(f32(0.5) * (iscale * xval[o + i] - f32(1.0)))
        l = max(0, min(KMAXQ - 1, l))
        L[o + i] = l
        u |= l << (2 * i)
    gi = np.int64(kmap[u])
    if gi >= 0:
        return gi, True
    for l in range(3):
        sq = scale * f32(2 * l + 1)
        for i in range(8):
            diff = sq - xval[o + i]
            terms[3 * i + l] = waux[o + i] * diff * diff
    p = -gi - 1
    n = np.int64(nbrs[p])
    best_d2 = FLT_MAX
    gi = np.int64(-1)
    j = 1
    while j + 3 <= n:
        g0 = np.int64(nbrs[p + j])
        g1 = np.int64(nbrs[p + j + 1])
        g2 = np.int64(nbrs[p + j + 2])
        g3 = np.int64(nbrs[p + j + 3])
        d0 = f32(0.0)
        d1 = f32(0.0)
        d2 = f32(0.0)
        d3 = f32(0.0)
        for i in range(8):
            d0 += terms[offs[g0, i]]
            d1 += terms[offs[g1, i]]
            d2 += terms[offs[g2, i]]
            d3 += terms[offs[g3, i]]
        if d0 < best_d2:
            best_d2 = d0
            gi = g0
        if d1 < best_d2:
            best_d2 = d1
            gi = g1
        if d2 < best_d2:
            best_d2 = d2
            gi = g2
        if d3 < best_d2:
            best_d2 = d3
            gi = g3
        j += 4
    while j <= n:
        g = np.int64(nbrs[p + j])
        d2 = f32(0.0)
        for i in range(8):
            d2 += terms[offs[g, i]]
        if d2 < best_d2:
            best_d2 = d2
            gi = g
        j += 1
    if gi < 0:  # only with NaN distances (llama.cpp aborts); take the first candidate
        gi = np.int64(nbrs[p + 1])
    for i in range(8):
        L[o + i] = np.int64(offs[gi, i]) - 3 * i
    return gi, False


@njit(inline="always", **_JIT)
def _grid_index(L, o, kmap):
    """The grid index of the 8 levels L[o:o+8]; on the grid by construction (llama.cpp aborts otherwise)."""
    return grid_index(kmap, L, o, 8, 2)


@njit(inline="always", **_JIT)
def _imatrix_sub_block(xbl, o, n, qwb, sigma2, weight, waux, xval):
    """The sub-block preamble IQ2_XXS and IQ2_XS share: importance weights, their square roots, and |x| with the
    even-parity signs. Returns the packed sign bits (7 per group of 8)."""
    imatrix_weights(weight, xbl, o, n, qwb, sigma2)
    sqrt_weights(waux, weight, n)
    return abs_and_even_signs(xbl, o, weight, xval, n)


@njit(inline="always", **_JIT)
def _put_scale_nibbles(dst, p, iscale, scales):
    """The 16 sub-block scales' 4-bit levels, two to a byte from dst[p] (IQ2_XS and IQ2_S)."""
    for ib in range(16):
        l = scale_level(iscale, scales[ib], 15)
        if ib % 2 == 0:
            dst[p + ib // 2] = l
        else:
            dst[p + ib // 2] |= l << 4


@njit(parallel=True, **_JIT)
def _quant_iq2_xxs(out, x, qw, offs, kmap, nbrs):  # d @0, u32 q2[16] @2 (per 32: 4 grid bytes; signs, scale)
    nbl = x.shape[1] // 256
    for r in prange(x.shape[0]):
        weight = np.empty(32, np.float32)
        waux = np.empty(32, np.float32)
        xval = np.empty(32, np.float32)
        L = np.zeros(32, np.int8)
        Laux = np.zeros(32, np.int8)
        terms = np.empty(24, np.float32)
        Lqp = np.zeros(32, np.uint8)
        scales = np.empty(8, np.float32)
        q2 = np.empty(16, np.int64)
        for ibl in range(nbl):
            xbl = x[r, 256 * ibl:256 * ibl + 256]
            qwb = qw[256 * ibl:256 * ibl + 256]
            dst = out[r, IQ2XXS.size * ibl:IQ2XXS.size * (ibl + 1)]
            q2[:] = 0
            max_scale = f32(0.0)
            sigma2 = sum_of_squares(xbl, 0, 256) / f32(256.0)
            for ib in range(8):
                signs = _imatrix_sub_block(xbl, 32 * ib, 32, qwb, sigma2, weight, waux, xval)
                if max_of(xval, 32) < GROUP_MAX_EPS:
                    scales[ib] = f32(0.0)
                    continue
                scale = QP_SEARCH(32, xval, Lqp, weight)
                eff_max = scale * f32(KMAXQ)
                if eff_max <= 0:
                    scales[ib] = f32(0.0)
                    continue
                best = f32(0.0)
                for is_ in range(-6, 7):
                    iscale = (f32(2 * KMAXQ - 1) + f32(is_) * f32(0.1)) / eff_max
                    this_scale = f32(1.0) / iscale
                    for k in range(4):
                        _snap(xval, waux, 8 * k, iscale, this_scale, Laux, terms, offs, kmap, nbrs)
                    sumqx, sumq2 = odd_code_fit(weight, xval, Laux, 32)
                    if sumq2 > 0 and sumqx * sumqx > best * sumq2:
                        scale = sumqx / sumq2
                        best = scale * sumqx
                        L[:] = Laux
                if scale > 0:
                    iscale = f32(1.0) / scale
                    for k in range(4):
                        _snap(xval, waux, 8 * k, iscale, scale, L, terms, offs, kmap, nbrs)
                    sumqx, sumq2 = odd_code_fit(weight, xval, L, 32)
                    if sumq2 > 0:
                        scale = sumqx / sumq2
                if scale < 0:
                    scale = -scale
                    signs ^= 0x0FFFFFFF  # each group's 7 bits inverted
                for k in range(4):
                    q2[2 * ib] |= _grid_index(L, 8 * k, kmap) << (8 * k)
                q2[2 * ib + 1] |= signs
                scales[ib] = scale
                max_scale = max_scale if max_scale > scale else scale
            if max_scale == 0:
                dst[:] = 0
                continue
            d = max_scale / f32(31.0)
            put_f16(dst, IQ2XXS.d, d)
            iscale = f32(1.0) / d
            for ib in range(8):
                q2[2 * ib + 1] |= scale_level(iscale, scales[ib], 15) << 28
            for j in range(16):
                put_u32(dst, IQ2XXS.qs + 4 * j, q2[j])


@njit(**_JIT)
def _sub16(xval, waux, weight, L, Laux, terms, max_, offs, kmap, nbrs):
    """The 16-element scale search of IQ2_XS and IQ2_S (identical there): 19 trial scales, then the groups whose
    best trial point was off the grid re-picked with the fitted scale. L is zero on entry; returns the scale."""
    best = f32(0.0)
    scale = max_ / f32(2 * KMAXQ - 1)
    on0 = True
    on1 = True
    for is_ in range(-9, 10):
        iscale = (f32(2 * KMAXQ - 1) + f32(is_) * f32(0.1)) / max_
        this_scale = f32(1.0) / iscale
        a0 = _snap(xval, waux, 0, iscale, this_scale, Laux, terms, offs, kmap, nbrs)[1]
        a1 = _snap(xval, waux, 8, iscale, this_scale, Laux, terms, offs, kmap, nbrs)[1]
        sumqx, sumq2 = odd_code_fit(weight, xval, Laux, 16)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            scale = sumqx / sumq2
            best = scale * sumqx
            L[:] = Laux
            on0 = a0
            on1 = a1
    if (not on0 or not on1) and scale > 0:
        iscale = f32(1.0) / scale
        if not on0:
            _snap(xval, waux, 0, iscale, scale, L, terms, offs, kmap, nbrs)
        if not on1:
            _snap(xval, waux, 8, iscale, scale, L, terms, offs, kmap, nbrs)
        sumqx, sumq2 = odd_code_fit(weight, xval, L, 16)
        if sumq2 > 0:
            scale = sumqx / sumq2
    return scale


@njit(parallel=True, **_JIT)
def _quant_iq2_xs(out, x, qw, offs, kmap, nbrs):  # d @0, u16 qs[32] @2 (index | signs << 9), scales[8] @66
    nbl = x.shape[1] // 256
    for r in prange(x.shape[0]):
        weight = np.empty(16, np.float32)
        waux = np.empty(16, np.float32)
        xval = np.empty(16, np.float32)
        L = np.zeros(16, np.int8)
        Laux = np.zeros(16, np.int8)
        terms = np.empty(24, np.float32)
        scales = np.empty(16, np.float32)
        for ibl in range(nbl):
            xbl = x[r, 256 * ibl:256 * ibl + 256]
            qwb = qw[256 * ibl:256 * ibl + 256]
            dst = out[r, IQ2XS.size * ibl:IQ2XS.size * (ibl + 1)]
            dst[:] = 0
            max_scale = f32(0.0)
            sigma2 = sum_of_squares(xbl, 0, 256) / f32(256.0)
            for ib in range(16):
                signs = _imatrix_sub_block(xbl, 16 * ib, 16, qwb, sigma2, weight, waux, xval)
                mx = max_of(xval, 16)
                L[:] = 0
                if mx < GROUP_MAX_EPS:
                    scales[ib] = f32(0.0)
                    continue
                scale = _sub16(xval, waux, weight, L, Laux, terms, mx, offs, kmap, nbrs)
                if scale < 0:
                    scale = -scale
                    signs ^= 0x3FFF
                for k in range(2):
                    code = _grid_index(L, 8 * k, kmap) | (((signs >> (7 * k)) & 127) << 9)
                    put_u16(dst, IQ2XS.qs + 2 * (2 * ib + k), code)
                scales[ib] = scale
                max_scale = max_scale if max_scale > scale else scale
            if max_scale == 0:
                dst[IQ2XS.qs:IQ2XS.scales] = 0
                continue
            d = max_scale / f32(31.0)
            put_f16(dst, IQ2XS.d, d)
            iscale = f32(1.0) / d
            _put_scale_nibbles(dst, IQ2XS.scales, iscale, scales)


@njit(parallel=True, **_JIT)
def _quant_iq2_s(out, x, qw, offs, kmap, nbrs):  # d @0, qs[32] @2, signs[32] @34, qh[8] @66, scales[8] @74
    nbl = x.shape[1] // 256
    has_qw = qw.shape[0] > 0
    for r in prange(x.shape[0]):
        weight = np.empty(16, np.float32)
        waux = np.empty(16, np.float32)
        xval = np.empty(16, np.float32)
        L = np.zeros(16, np.int8)
        Laux = np.zeros(16, np.int8)
        terms = np.empty(24, np.float32)
        scales = np.empty(16, np.float32)
        for ibl in range(nbl):
            xbl = x[r, 256 * ibl:256 * ibl + 256]
            qwb = qw[256 * ibl:256 * ibl + 256] if has_qw else qw
            dst = out[r, IQ2S.size * ibl:IQ2S.size * (ibl + 1)]
            dst[:] = 0
            max_scale = f32(0.0)
            sigma2 = f32(2.0) * sum_of_squares(xbl, 0, 256) / f32(256.0)
            for ib in range(16):
                o = 16 * ib
                if has_qw:
                    imatrix_weights(weight, xbl, o, 16, qwb, sigma2)
                else:
                    for i in range(16):
                        v = xbl[o + i]
                        weight[i] = f32(0.25) * sigma2 + v * v
                sqrt_weights(waux, weight, 16)
                signs = abs_and_signs(xbl, o, xval, 16)  # all 8 signs of each group kept
                mx = max_of(xval, 16)
                L[:] = 0
                if mx < GROUP_MAX_EPS_IQ2_S:
                    scales[ib] = f32(0.0)
                    continue
                scale = _sub16(xval, waux, weight, L, Laux, terms, mx, offs, kmap, nbrs)
                if scale < 0:
                    scale = -scale
                    signs ^= 0xFFFF
                for k in range(2):
                    gi = _grid_index(L, 8 * k, kmap)
                    i8 = 2 * ib + k
                    dst[IQ2S.qs + i8] = gi & 255
                    dst[IQ2S.qh + i8 // 4] |= (gi >> 8) << (2 * (i8 % 4))
                    dst[IQ2S.signs + i8] = (signs >> (8 * k)) & 255
                scales[ib] = scale
                max_scale = max_scale if max_scale > scale else scale
            if max_scale == 0:
                continue
            d = max_scale / f32(31.0)
            put_f16(dst, IQ2S.d, d * f32(0.9875))
            iscale = f32(1.0) / d
            _put_scale_nibbles(dst, IQ2S.scales, iscale, scales)


@lru_cache(maxsize=None)
def _tables(type_name):
    """(offs, map, neighbours): the grid as term offsets offs[g, i] = 3 i + level (see _snap)."""
    t = grid_tables(type_name)
    offs = ((t.grid.astype(np.int64) - 1) // 2 + 3 * np.arange(8)).astype(np.uint8)
    offs.flags.writeable = False
    return offs, t.map, t.neighbours


def _need_imatrix(name, qw):
    if qw.shape[0] == 0:
        raise ValueError(f"{name} needs an importance matrix")


def quant_iq2_xxs(out, x, qw):
    _need_imatrix("IQ2_XXS", qw)
    _quant_iq2_xxs(out, x, qw, *_tables("IQ2_XXS"))


def quant_iq2_xs(out, x, qw):
    _need_imatrix("IQ2_XS", qw)
    _quant_iq2_xs(out, x, qw, *_tables("IQ2_XS"))


def quant_iq2_s(out, x, qw):
    _quant_iq2_s(out, x, qw, *_tables("IQ2_S"))


QUANTIZERS = {
    "IQ2_XXS": quant_iq2_xxs,
    "IQ2_XS": quant_iq2_xs,
    "IQ2_S": quant_iq2_s,
}
