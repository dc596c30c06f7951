"""1.5-1.75 bpw lattice quantizers IQ1_S and IQ1_M (the 2048-point ternary grid of quant_iq_grids), following
llama.cpp's quantize_row_iq1_s_impl / quantize_row_iq1_m_impl step for step (so the bytes match too).

Per 256-element super-block: weights qw * sqrt(sigma2 + x^2) with sigma2 = 2 mean x^2 (IQ1_S always needs the
importance matrix; IQ1_M without one uses x^2). Each sub-block (32 elements for IQ1_S, 16 for IQ1_M) is sorted by
value (in the order of glibc's qsort, a stable merge sort: ties keep their index order) and the weighted
least-squares fit to the levels {-1, 0, 1} + delta (delta = +-1/8, the "shift") is solved exhaustively over the two
split points of the sorted order, from prefix sums. IQ1_S picks one shift per sub-block; IQ1_M one per group of 8
(four combinations per split, from prefix sums kept per half). The level pattern of each group of 8 is looked up in
the grid; off the grid the listed neighbour of least weighted squared error replaces it and the scale is refitted.
The super-block scale is max/15: IQ1_S stores it times 1.125 in an fp16 and 3-bit odd multiples (2l+1) of it per
sub-block (the shift sign in bit 3); IQ1_M refits the super-block scale to the chosen 3-bit multiples and stores
its fp16 (times 1.1125) in the top nibbles of the four 16-bit scale words.

Replicated quirks of the reference: sub-blocks with max |x| below 1e-12 (IQ1_S) / 1e-7 (IQ1_M), or where no split
fits, keep grid index 0 with scale 0 (IQ1_M still counts them, at grid point 0, in the super-block refit); a
super-block whose scales are all 0 keeps the grid indices already written with d = 0 (IQ1_M: scales bytes 0). The
reference's fallback search over the whole grid (reached only when every neighbour's error overflows) indexes the
input by the grid index instead of the element; it is reproduced inside the matrix. Where llama.cpp would abort
(no grid point found, a NaN scale) the kernels raise ValueError.

Kernel signature: kernel(out, x, qw, grid, kmap, neighbours) with qw float32 (cols,) or empty and the tables of
quant_iq_grids.grid_tables; QUANTIZERS wraps them to kernel(out, x, qw).
"""
import numpy as np
from numba import njit, prange

from .blocks import block
from .quant_common import f32, fp32_to_fp16, grid_index, imatrix_weights, put_f16, put_u16, scale_level, sum_of_squares
from .quant_iq_grids import grid_tables

IQ1S, IQ1M = block("IQ1_S"), block("IQ1_M")

GROUP_MAX_EPS_IQ1_S = f32(1e-12)
GROUP_MAX_EPS_IQ1_M = f32(1e-7)
IQ1_DELTA = f32(0.125)  # IQ1S_DELTA == IQ1M_DELTA
FLT_MAX = f32(np.finfo(np.float32).max)
X_P = np.array([f32(-1.0) + IQ1_DELTA, IQ1_DELTA, f32(1.0) + IQ1_DELTA], dtype=np.float32)
X_M = np.array([f32(-1.0) - IQ1_DELTA, -IQ1_DELTA, f32(1.0) - IQ1_DELTA], dtype=np.float32)
IQ1M_MASKS = np.array([0x00, 0x80, 0x08, 0x88], dtype=np.int64)

_JIT = dict(cache=True, error_model="numpy")


@njit(inline="always", **_JIT)
def _merge_sort_block(xb, o, n, keys, idx, tkeys, tidx):
    """glibc qsort (msort_with_tmp: halves sorted recursively, merged taking the left element unless it compares
    greater) of the pairs (x, index) of xb[o:o+n] by x; n is a power of two, so the bottom-up merge below makes the
    same merges. Returns the buffer (idx or tidx) that ends up holding the sorted indices."""
    for j in range(n):
        keys[j] = xb[o + j]
        idx[j] = j
    sk, si, dk, di = keys, idx, tkeys, tidx
    width = 1
    while width < n:
        for lo in range(0, n, 2 * width):
            a = lo
            mid = lo + width
            b = mid
            hi = lo + 2 * width
            p = lo
            while a < mid and b < hi:
                if sk[a] > sk[b]:
                    dk[p] = sk[b]
                    di[p] = si[b]
                    b += 1
                else:
                    dk[p] = sk[a]
                    di[p] = si[a]
                    a += 1
                p += 1
            while a < mid:
                dk[p] = sk[a]
                di[p] = si[a]
                a += 1
                p += 1
            while b < hi:
                dk[p] = sk[b]
                di[p] = si[b]
                b += 1
                p += 1
        sk, si, dk, di = dk, di, sk, si
        width *= 2
    return si


@njit(inline="always", **_JIT)
def _sort_block(xb, o, n, keys, idx, tkeys, tidx):
    """The order glibc's qsort gives the pairs (x, index) of xb[o:o+n] sorted by x (its merge sort is stable): each
    element's rank is the number of elements below it plus the equal ones before it, a branch-free count. A block
    holding a NaN (which makes the comparison inconsistent; the block then fits nothing anyway) takes the merge
    sort itself. Returns the array of sorted indices."""
    has_nan = False
    for j in range(n):
        v = xb[o + j]
        keys[j] = v
        has_nan |= v != v
    if has_nan:
        return _merge_sort_block(xb, o, n, keys, idx, tkeys, tidx)
    for j in range(n):
        v = keys[j]
        rk = 0
        for i in range(j):
            rk += np.int64(keys[i] <= v)
        for i in range(j + 1, n):
            rk += np.int64(keys[i] < v)
        idx[rk] = j
    return idx


@njit(**_JIT)
def _pack_levels(grid):
    """Every grid point's 8 levels (code - 1) / 2 as the bytes of an int64, element i in byte i."""
    gpack = np.empty(grid.shape[0], np.int64)
    for g in range(grid.shape[0]):
        v = 0
        for i in range(8):
            v |= ((np.int64(grid[g, i]) - 1) >> 1) << (8 * i)
        gpack[g] = v
    return gpack


@njit(inline="always", **_JIT)
def _best_neighbour2(neighbours, off, grid, gpack, x, r, base, weight, wo, scale, xg, err, bad):
    """iq1_find_best_neighbour2 for the 8 elements x[r, base:base+8] (weights weight[wo:wo+8]): the listed grid
    point of least weighted squared error of scale * xg[level] (the first of equals). The 24 terms
    w * diff * diff (element i at level l) are computed once into err[3 i + l]; each neighbour's sum adds them in
    the reference's order (levels from gpack). If every error overflows, the reference's fallback scans the whole
    grid with its slip: element xval[i] (i the grid index) instead of xval[j], read here from the matrix; past its
    end (undefined in C) or when nothing is found, bad is set."""
    for i in range(8):
        w = weight[wo + i]
        xv = x[r, base + i]
        for l in range(3):
            diff = scale * xg[l] - xv
            err[3 * i + l] = w * diff * diff
    n = np.int64(neighbours[off])
    best = FLT_MAX
    gi = -1
    for j in range(1, n + 1):
        g = np.int64(neighbours[off + j])
        d2 = f32(0.0)
        v = gpack[g]
        for i in range(8):
            d2 += err[3 * i + ((v >> (8 * i)) & 3)]
        if d2 < best:
            best = d2
            gi = g
    if gi < 0:
        rows, cols = x.shape
        for g in range(grid.shape[0]):
            p = r * cols + base + g  # the flat position of xval[g]
            if p >= rows * cols:
                bad[r] = True
                break
            xv = x[p // cols, p % cols]
            d2 = f32(0.0)
            for j in range(8):
                w = weight[wo + j]
                q = xg[(np.int64(grid[g, j]) - 1) // 2]
                diff = scale * q - xv
                d2 += w * diff * diff
            if d2 < best:
                best = d2
                gi = g
    if gi < 0:
        bad[r] = True
        gi = 0
    return gi


@njit(inline="always", **_JIT)
def _grid_point(kmap, L, k, neighbours, grid, gpack, x, r, o, weight, wo, scale, xx, err, bad):
    """Group k of a sub-block (x[r, o:], weights from weight[wo]): the grid index of its level pattern or, off the
    grid, of the best listed neighbour; and whether it was on the grid (else the caller refits the scale)."""
    gi = grid_index(kmap, L, 8 * k, 8, 2)
    if gi >= 0:
        return gi, True
    gi = _best_neighbour2(neighbours, -gi - 1, grid, gpack, x, r, o + 8 * k, weight, wo + 8 * k, scale, xx, err, bad)
    return gi, False


@njit(inline="always", **_JIT)
def _group_fit(sumqx, sumq2, grid, g, xx, weight, wo, x, r, o):
    """Adds group g's (sum w q x, sum w q^2), q = xx[level] of grid point g, to the running sums (the refit after
    an off-grid group, in the reference's order)."""
    for j in range(8):
        w = weight[wo + j]
        q = xx[(np.int64(grid[g, j]) - 1) // 2]
        sumqx += w * q * x[r, o + j]
        sumq2 += w * q * q
    return sumqx, sumq2


@njit(inline="always", **_JIT)
def _abs_max(x, r, o, n):
    mx = abs(x[r, o])
    for i in range(1, n):
        a = abs(x[r, o + i])
        mx = mx if mx > a else a
    return mx


@njit(inline="always", **_JIT)
def _split_levels(L, si, n, i1, i2, mirror):
    """The levels of the best split of the sorted order si: 0 below i1, 1 below i2, 2 above; mirrored (2 - l)
    when the fitted scale came out negative (the caller negates it and the shift)."""
    for j in range(n):
        L[si[j]] = 0 if j < i1 else (1 if j < i2 else 2)
    if mirror:
        for j in range(n):
            L[j] = 2 - L[j]


@njit(inline="always", **_JIT)
def _iq1m_shifted(shift, k):
    """The level values of half k (group of 8) of an IQ1_M sub-block under its shift code (0 = (+, +),
    1 = (+, -), 2 = (-, +), 3 = (-, -))."""
    return X_P if (shift < 2 if k == 0 else shift % 2 == 0) else X_M


@njit(inline="always", **_JIT)
def _sigma2(x, r, o):
    return f32(2.0) * sum_of_squares(x[r], o, 256) / f32(256.0)


@njit(parallel=True, **_JIT)
def quant_iq1_s_kernel(out, x, qw, grid, kmap, neighbours):  # d @0, qs[32] @2, u16 qh[8] @34
    nb = x.shape[1] // 256
    bad = np.zeros(x.shape[0], np.bool_)
    gpack = _pack_levels(grid)
    xp0, xp1, xp2 = X_P[0], X_P[1], X_P[2]
    xm0, xm1, xm2 = X_M[0], X_M[1], X_M[2]
    for r in prange(x.shape[0]):
        scales = np.empty(8, np.float32)
        shifts = np.empty(8, np.int64)
        qh = np.empty(8, np.int64)
        weight = np.empty(32, np.float32)
        L = np.empty(32, np.int8)
        sumx = np.empty(33, np.float32)
        sumw = np.empty(33, np.float32)
        keys = np.empty(32, np.float32)
        idx = np.empty(32, np.int64)
        tkeys = np.empty(32, np.float32)
        tidx = np.empty(32, np.int64)
        index = np.empty(4, np.int64)
        cqx0 = np.empty(33, np.float32)
        cq20 = np.empty(33, np.float32)
        cqx1 = np.empty(33, np.float32)
        cq21 = np.empty(33, np.float32)
        err = np.empty(24, np.float32)
        for ibl in range(nb):
            dst = out[r, IQ1S.size * ibl:IQ1S.size * (ibl + 1)]
            for i in range(IQ1S.size):
                dst[i] = 0
            for i in range(8):
                qh[i] = 0
            max_scale = f32(0.0)
            o0 = 256 * ibl
            sigma2 = _sigma2(x, r, o0)
            for ib in range(8):
                o = o0 + 32 * ib
                imatrix_weights(weight, x[r], o, 32, qw, sigma2)
                mx = _abs_max(x, r, o, 32)
                if mx < GROUP_MAX_EPS_IQ1_S:
                    scales[ib] = f32(0.0)
                    shifts[ib] = 1
                    continue
                si = _sort_block(x[r], o, 32, keys, idx, tkeys, tidx)
                sumx[0] = f32(0.0)
                sumw[0] = f32(0.0)
                for j in range(32):
                    i = si[j]
                    sumx[j + 1] = sumx[j] + weight[i] * x[r, o + i]
                    sumw[j + 1] = sumw[j] + weight[i]
                best_score = -FLT_MAX
                scale = mx
                besti1 = -1
                besti2 = -1
                best_shift = 0
                sx_all = sumx[32]
                sw_all = sumw[32]
                for i1 in range(33):
                    a = sumx[i1] - sumx[0]
                    wa = sumw[i1] - sumw[0]
                    ap = a * xp0
                    am = a * xm0
                    wap = wa * xp0 * xp0
                    wam = wa * xm0 * xm0
                    s1 = sumx[i1]
                    w1 = sumw[i1]
                    for i2 in range(i1, 33):  # the candidates' sums, branch-free (vectorized)
                        b = sumx[i2] - s1
                        c = sx_all - sumx[i2]
                        wb = sumw[i2] - w1
                        wc = sw_all - sumw[i2]
                        cqx0[i2] = ap + b * xp1 + c * xp2
                        cq20[i2] = wap + wb * xp1 * xp1 + wc * xp2 * xp2
                        cqx1[i2] = am + b * xm1 + c * xm2
                        cq21[i2] = wam + wb * xm1 * xm1 + wc * xm2 * xm2
                    for i2 in range(i1, 33):  # then the reference's scan, in its order
                        sumqx = cqx0[i2]
                        sumq2 = cq20[i2]
                        if sumq2 > 0 and sumqx * sumqx > best_score * sumq2:
                            scale = sumqx / sumq2
                            best_score = scale * sumqx
                            besti1 = i1
                            besti2 = i2
                            best_shift = 1
                        sumqx = cqx1[i2]
                        sumq2 = cq21[i2]
                        if sumq2 > 0 and sumqx * sumqx > best_score * sumq2:
                            scale = sumqx / sumq2
                            best_score = scale * sumqx
                            besti1 = i1
                            besti2 = i2
                            best_shift = -1
                if besti1 < 0 or besti2 < 0 or best_shift == 0:
                    scales[ib] = f32(0.0)
                    shifts[ib] = 1
                    continue
                _split_levels(L, si, 32, besti1, besti2, scale < 0)
                if scale < 0:
                    scale = -scale
                    best_shift = -best_shift
                all_on_grid = True
                xx = X_P if best_shift == 1 else X_M
                for k in range(4):
                    gi, on_grid = _grid_point(kmap, L, k, neighbours, grid, gpack, x, r, o, weight, 0, scale,
                                                xx, err, bad)
                    index[k] = gi
                    all_on_grid &= on_grid
                if not all_on_grid:
                    sumqx = f32(0.0)
                    sumq2 = f32(0.0)
                    for k in range(4):
                        sumqx, sumq2 = _group_fit(sumqx, sumq2, grid, index[k], xx, weight, 8 * k, x, r, o + 8 * k)
                    if sumqx > 0 and sumq2 > 0:
                        scale = sumqx / sumq2
                h = 0
                for k in range(4):
                    dst[IQ1S.qs + 4 * ib + k] = index[k] & 255
                    h |= (index[k] >> 8) << (3 * k)
                qh[ib] = h
                if not scale >= 0:
                    bad[r] = True
                scales[ib] = scale
                shifts[ib] = best_shift
                max_scale = max_scale if max_scale > scale else scale
            if max_scale != 0:
                d = max_scale / f32(15.0)
                put_f16(dst, IQ1S.d, d * f32(1.125))
                idd = f32(1.0) / d
                for ib in range(8):
                    l = scale_level(idd, scales[ib], 7)
                    if shifts[ib] == -1:
                        l |= 8
                    qh[ib] |= l << 12
            for ib in range(8):
                put_u16(dst, IQ1S.qh + 2 * ib, qh[ib] & 0xFFFF)
    if bad.any():
        raise ValueError("IQ1_S: no grid point or a NaN scale (llama.cpp aborts on this input)")


@njit(parallel=True, **_JIT)
def quant_iq1_m_kernel(out, x, qw, grid, kmap, neighbours):  # qs[32] @0, qh[16] @32, u16 scales[4] @48
    nb = x.shape[1] // 256
    has_qw = qw.shape[0] > 0
    bad = np.zeros(x.shape[0], np.bool_)
    gpack = _pack_levels(grid)
    xp0, xp1, xp2 = X_P[0], X_P[1], X_P[2]
    xm0, xm1, xm2 = X_M[0], X_M[1], X_M[2]
    p2 = xp2
    m2 = xm2
    cp1 = xp0 * xp0 - xp1 * xp1
    cp2 = xp1 * xp1 - xp2 * xp2
    cm1 = xm0 * xm0 - xm1 * xm1
    cm2 = xm1 * xm1 - xm2 * xm2
    for r in prange(x.shape[0]):
        scales = np.empty(16, np.float32)
        shifts = np.empty(16, np.int64)
        weight = np.empty(256, np.float32)  # the whole super-block's (the reference recomputes them, same values)
        L = np.empty(16, np.int8)
        px0 = np.empty(17, np.float32)
        px1 = np.empty(17, np.float32)
        pw0 = np.empty(17, np.float32)
        pw1 = np.empty(17, np.float32)
        keys = np.empty(16, np.float32)
        idx = np.empty(16, np.int64)
        tkeys = np.empty(16, np.float32)
        tidx = np.empty(16, np.int64)
        index = np.empty(2, np.int64)
        err = np.empty(24, np.float32)
        sc = np.empty(4, np.int64)
        for ibl in range(nb):
            dst = out[r, IQ1M.size * ibl:IQ1M.size * (ibl + 1)]
            for i in range(IQ1M.size):
                dst[i] = 0
            max_scale = f32(0.0)
            o0 = 256 * ibl
            sigma2 = _sigma2(x, r, o0)
            if has_qw:
                imatrix_weights(weight, x[r], o0, 256, qw, sigma2)
            else:
                for i in range(256):
                    v = x[r, o0 + i]
                    weight[i] = v * v
            for ib in range(16):
                o = o0 + 16 * ib
                wo = 16 * ib
                mx = _abs_max(x, r, o, 16)
                if mx < GROUP_MAX_EPS_IQ1_M:
                    scales[ib] = f32(0.0)
                    shifts[ib] = 0
                    continue
                si = _sort_block(x[r], o, 16, keys, idx, tkeys, tidx)
                px0[0] = f32(0.0)
                px1[0] = f32(0.0)
                pw0[0] = f32(0.0)
                pw1[0] = f32(0.0)
                for j in range(16):  # prefix sums per half (h = 0: elements 0..7)
                    i = si[j]
                    v = weight[wo + i] * x[r, o + i]
                    w = weight[wo + i]
                    if i < 8:
                        px0[j + 1] = px0[j] + v
                        px1[j + 1] = px1[j]
                        pw0[j + 1] = pw0[j] + w
                        pw1[j + 1] = pw1[j]
                    else:
                        px1[j + 1] = px1[j] + v
                        px0[j + 1] = px0[j]
                        pw1[j + 1] = pw1[j] + w
                        pw0[j + 1] = pw0[j]
                tp0 = px0[16] * p2
                tm0 = px0[16] * m2
                tp1 = px1[16] * p2
                tm1 = px1[16] * m2
                twp0 = pw0[16] * p2 * p2
                twm0 = pw0[16] * m2 * m2
                twp1 = pw1[16] * p2 * p2
                twm1 = pw1[16] * m2 * m2
                best_score = -FLT_MAX
                scale = mx
                besti1 = -1
                besti2 = -1
                best_k = -1
                for i1 in range(17):
                    ap0 = twp0 + pw0[i1] * cp1
                    am0 = twm0 + pw0[i1] * cm1
                    ap1 = twp1 + pw1[i1] * cp1
                    am1 = twm1 + pw1[i1] * cm1
                    s0 = px0[i1]
                    s1 = px1[i1]
                    for i2 in range(i1, 17):
                        sx0 = s0 + px0[i2]
                        sx1 = s1 + px1[i2]
                        qx_p0 = tp0 - sx0
                        qx_m0 = tm0 - sx0
                        qx_p1 = tp1 - sx1
                        qx_m1 = tm1 - sx1
                        q2_p0 = ap0 + pw0[i2] * cp2
                        q2_m0 = am0 + pw0[i2] * cm2
                        q2_p1 = ap1 + pw1[i2] * cp2
                        q2_m1 = am1 + pw1[i2] * cm2
                        for k in range(4):  # sumqx[k], sumq2[k]: 0 = (+, +), 1 = (+, -), 2 = (-, +), 3 = (-, -)
                            if k == 0:
                                sumqx = qx_p0 + qx_p1
                                sumq2 = q2_p0 + q2_p1
                            elif k == 1:
                                sumqx = qx_p0 + qx_m1
                                sumq2 = q2_p0 + q2_m1
                            elif k == 2:
                                sumqx = qx_m0 + qx_p1
                                sumq2 = q2_m0 + q2_p1
                            else:
                                sumqx = qx_m0 + qx_m1
                                sumq2 = q2_m0 + q2_m1
                            if sumq2 > 0 and sumqx * sumqx > best_score * sumq2:
                                scale = sumqx / sumq2
                                best_score = scale * sumqx
                                besti1 = i1
                                besti2 = i2
                                best_k = k
                if besti1 < 0 or besti2 < 0 or best_k < 0:
                    scales[ib] = f32(0.0)
                    shifts[ib] = 0
                    continue
                _split_levels(L, si, 16, besti1, besti2, scale < 0)
                if scale < 0:
                    scale = -scale
                    best_k = 3 - best_k  # 0 <-> 3, 1 <-> 2
                all_on_grid = True
                for k in range(2):
                    gi, on_grid = _grid_point(kmap, L, k, neighbours, grid, gpack, x, r, o, weight, wo, scale,
                                                _iq1m_shifted(best_k, k), err, bad)
                    index[k] = gi
                    all_on_grid &= on_grid
                if not all_on_grid:
                    sumqx = f32(0.0)
                    sumq2 = f32(0.0)
                    for k in range(2):
                        sumqx, sumq2 = _group_fit(sumqx, sumq2, grid, index[k], _iq1m_shifted(best_k, k), weight,
                                                  wo + 8 * k, x, r, o + 8 * k)
                    if sumqx > 0 and sumq2 > 0:
                        scale = sumqx / sumq2
                dst[IQ1M.qs + 2 * ib] = index[0] & 255
                dst[IQ1M.qs + 2 * ib + 1] = index[1] & 255
                dst[IQ1M.qh + ib] = (index[0] >> 8) | ((index[1] >> 8) << 4)
                if not scale >= 0:
                    bad[r] = True
                scales[ib] = scale
                shifts[ib] = best_k
                max_scale = max_scale if max_scale > scale else scale
            if max_scale == 0:
                continue
            for i in range(4):
                sc[i] = 0
            d = max_scale / f32(15.0)
            idd = f32(1.0) / d
            sumqx = f32(0.0)
            sumq2 = f32(0.0)
            for ib in range(16):
                l = scale_level(idd, scales[ib], 7)
                sc[ib // 4] |= l << (3 * (ib % 4))
                qhb = np.int64(dst[IQ1M.qh + ib]) | IQ1M_MASKS[shifts[ib]]
                dst[IQ1M.qh + ib] = qhb
                o = o0 + 16 * ib
                wo = 16 * ib
                fl = f32(2 * l + 1)
                for k in range(2):
                    xx = _iq1m_shifted(shifts[ib], k)
                    g = np.int64(dst[IQ1M.qs + 2 * ib + k]) + ((qhb << (8 - 4 * k)) & 0x700)
                    for j in range(8):
                        w = weight[wo + 8 * k + j]
                        q = xx[(np.int64(grid[g, j]) - 1) // 2] * fl
                        sumqx += w * q * x[r, o + 8 * k + j]
                        sumq2 += w * q * q
            if sumq2 > 0:
                d = sumqx / sumq2
            s = fp32_to_fp16(d * f32(1.1125))
            sc[0] |= (s & 0x000F) << 12
            sc[1] |= (s & 0x00F0) << 8
            sc[2] |= (s & 0x0F00) << 4
            sc[3] |= s & 0xF000
            for i in range(4):
                put_u16(dst, IQ1M.scales + 2 * i, sc[i] & 0xFFFF)
    if bad.any():
        raise ValueError("IQ1_M: no grid point or a NaN scale (llama.cpp aborts on this input)")


def quant_iq1_s(out, x, qw):
    """IQ1_S rows: kernel(out, x, qw) with the grid tables of quant_iq_grids; needs the importance matrix (as the
    reference, which asserts one)."""
    if qw.shape[0] == 0:
        raise ValueError("IQ1_S needs an importance matrix")
    t = grid_tables("IQ1_S")
    quant_iq1_s_kernel(out, x, qw, t.grid, t.map, t.neighbours)


def quant_iq1_m(out, x, qw):
    """IQ1_M rows: kernel(out, x, qw) with the grid tables of quant_iq_grids (weights x^2 for an empty qw)."""
    t = grid_tables("IQ1_M")
    quant_iq1_m_kernel(out, x, qw, t.grid, t.map, t.neighbours)


QUANTIZERS = {
    "IQ1_S": quant_iq1_s,
    "IQ1_M": quant_iq1_m,
}
