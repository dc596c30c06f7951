"""Primitives shared by the quantizers, written to reproduce llama.cpp's C float32 arithmetic bit for bit.

Rules every quantizer kernel follows (ggml-quants.c is compiled without fast-math and, in the reference build,
without FMA contraction):
- all arithmetic on float32 scalars; constants are wrapped in f32(), integers are converted with f32() before they
  meet a float (numba would otherwise promote to float64);
- sums are sequential in the C loop order; no fastmath (LLVM then neither reassociates nor fuses a*b+c);
- nearest_int is the 12582912 magic add, read back through the float's bits (exact even outside its intended
  range); fp16 conversion is ggml's software GGML_FP32_TO_FP16; roundf rounds half away from zero.
The scale searches (make_qx_quants, make_q3_quants, make_qkx2_quants, make_qkx3_quants, make_qp_quants) follow
the reference's operation order; they are shared by the legacy imatrix path and the K-quants, and each caller
gets a version compiled for its constants (qx_search(8), qkx_search(15, -1.0, 0.1, 20, False, False), ...).
"""
import re

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

f32 = np.float32
GROUP_MAX_EPS = f32(1e-15)
_TO_INF = f32(2.0 ** 112)  # ggml's scale_to_inf / scale_to_zero
_TO_ZERO = f32(2.0 ** -110)
_F16_SUB = f32(2.0 ** -24)  # value of the fp16 subnormal step


@intrinsic
def _bits_of_f32(typingctx, x):
    """The IEEE bits of a float32 as an int32 (a bitcast, no conversion)."""
    if not isinstance(x, types.Float) or x.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _f32_of_bits(typingctx, b):
    """The float32 whose IEEE bits are the int32 b."""
    if not isinstance(b, types.Integer) or b.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(cache=True, inline="always", error_model="numpy")
def f32_bits(x):
    """Bits of float32 x as a non-negative int64 (0 .. 2**32-1)."""
    return np.int64(_bits_of_f32(x)) & 0xFFFFFFFF


@njit(cache=True, inline="always", error_model="numpy")
def f32_from_bits(b):
    """float32 from the low 32 bits of the integer b."""
    v = np.int64(b) & 0xFFFFFFFF
    return _f32_of_bits(np.int32(v - ((v & 0x80000000) << 1)))


@njit(cache=True, inline="always", error_model="numpy")
def nearest_int(fval):
    """ggml's nearest_int: add 12582912 in float32 and read the low 23 mantissa bits back."""
    val = fval + f32(12582912.0)
    return (f32_bits(val) & 0x007FFFFF) - 0x00400000


@njit(cache=True, inline="always", error_model="numpy")
def roundf(x):
    """C roundf (half away from zero) of a float32, as an int64 (exact: f64(|x|) + 0.5 cannot round)."""
    r = np.int64(np.floor(np.float64(abs(x)) + 0.5))
    return -r if x < 0 else r


@njit(cache=True, error_model="numpy")
def fp32_to_fp16(f):
    """ggml's software GGML_FP32_TO_FP16 (round to nearest even, NaN -> 0x7E00 with the sign), as an int64."""
    base = (abs(f) * _TO_INF) * _TO_ZERO
    w = f32_bits(f)
    shl1_w = (w + w) & 0xFFFFFFFF
    sign = w & 0x80000000
    bias = shl1_w & 0xFF000000
    if bias < 0x71000000:
        bias = 0x71000000
    base = f32_from_bits((bias >> 1) + 0x07800000) + base
    bits = f32_bits(base)
    exp_bits = (bits >> 13) & 0x00007C00
    mantissa_bits = bits & 0x00000FFF
    nonsign = exp_bits + mantissa_bits
    return (sign >> 16) | (0x7E00 if shl1_w > 0xFF000000 else nonsign)


@njit(cache=True, error_model="numpy")
def fp16_to_fp32(h):
    """Exact fp16 (int bits) -> float32."""
    sign = (np.int64(h) & 0x8000) << 16
    e = (np.int64(h) >> 10) & 0x1F
    m = np.int64(h) & 0x3FF
    if e == 0x1F:
        return f32_from_bits(sign | 0x7F800000 | (m << 13))
    if e == 0:
        v = f32(m) * _F16_SUB  # exact
        return -v if sign else v
    return f32_from_bits(sign | ((e + 112) << 23) | (m << 13))


@njit(cache=True, error_model="numpy")
def put_u16(dst, p, v):
    dst[p] = v & 0xFF
    dst[p + 1] = (v >> 8) & 0xFF


@njit(cache=True, error_model="numpy")
def put_u32(dst, p, v):
    put_u16(dst, p, v & 0xFFFF)
    put_u16(dst, p + 2, (v >> 16) & 0xFFFF)


@njit(cache=True, error_model="numpy")
def put_f16(dst, p, f):
    put_u16(dst, p, fp32_to_fp16(f))


# ------------------------------------------------------------------------------------------------ scale searches
# Each search is written once, generically (inline at the numba IR level), and compiled per configuration by a
# small factory: with nmax (and the step schedule) constant, LLVM simplifies the clamps and conversions of the
# inner loops, about 25% faster than one generic compiled version. A closure's constants are part of numba's
# cache key, so every configuration is cached on its own.

_JIT = dict(cache=True, error_model="numpy")
QX_CANDIDATES = 24      # make_qx_quants' 19 inverse scales, padded to three 8-lane vectors


@njit(inline="always", **_JIT)
def absmax_signed(x, n):
    """(amax, the first element of largest magnitude)."""
    mx = f32(0.0)
    amax = f32(0.0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    return amax, mx


@njit(inline="always", **_JIT)
def _make_qx_quants(n, nmax, x, L, w):
    amax, mx = absmax_signed(x, n)
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return f32(0.0)
    # The 19 inverse scales llama.cpp tries one after the other (-nmax / mx first, then is = -9..9 without 0) are
    # independent: their sums are accumulated side by side, each still in element order (the same float32
    # rounding), then compared in llama.cpp's order. A candidate's sums otherwise form one serial chain of adds.
    iscale = np.zeros(QX_CANDIDATES, np.float32)    # (padded to whole vectors: the last five stay 0)
    iscale[0] = f32(-nmax) / mx
    for k in range(1, 19):
        is_ = k - 10 if k < 10 else k - 9
        iscale[k] = -(f32(nmax) + f32(0.1) * f32(is_)) / mx
    sumlx = np.zeros(QX_CANDIDATES, np.float32)
    suml2 = np.zeros(QX_CANDIDATES, np.float32)
    for i in range(n):
        wx = w[i] * x[i]
        for k in range(QX_CANDIDATES):
            fl = f32(max(-nmax, min(nmax - 1, nearest_int(iscale[k] * x[i]))))
            sumlx[k] += wx * fl
            suml2[k] += w[i] * fl * fl
    scale = sumlx[0] / suml2[0] if suml2[0] != 0 else f32(0.0)
    best = scale * sumlx[0]
    chosen = 0
    for k in range(1, 19):
        if suml2[k] > 0 and sumlx[k] * sumlx[k] > best * suml2[k]:
            chosen = k
            scale = sumlx[k] / suml2[k]
            best = scale * sumlx[k]
    for i in range(n):
        L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale[chosen] * x[i])))
    return scale


def _jit_variant(fn, *constants):
    """njit of a factory-made search under a name of its own, from its constants: numba names the compiled
    function (and so the symbol in its on-disk cache) after the Python one, and two cached kernels that each call
    a variant of one name bound the second to the first one loaded in a process (a Q4_0 file quantized with Q5_0's
    nmax, depending on what ran before)."""
    tag = "_".join(re.sub(r"[^0-9A-Za-z]", "_", str(c).replace("-", "m")) for c in constants)
    fn.__name__ = fn.__qualname__ = f"{fn.__name__}_{tag}"
    return njit(**_JIT)(fn)


def qx_search(nmax):
    """make_qx_quants with rmse_type 1 (the only one llama.cpp's quantizers use), as search(n, x, L, w) -> scale:
    symmetric, weights w given (callers without importance weights pass x^2), L[i] = nmax + q in [0, 2 nmax)."""
    def qx_search(n, x, L, w):
        return _make_qx_quants(n, nmax, x, L, w)
    return _jit_variant(qx_search, nmax)


@njit(inline="always", **_JIT)
def _make_q3_quants(n, nmax, x, L):
    amax, mx = absmax_signed(x, n)
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return f32(0.0)
    iscale = f32(-nmax) / mx
    sumlx = f32(0.0)
    suml2 = f32(0.0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
        L[i] = l
        w = x[i] * x[i]
        fl = f32(l)
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = x[i] * x[i]
            li = f32(L[i])
            slx = sumlx - w * x[i] * li
            if slx > 0:
                sl2 = suml2 - w * li * li
                new_l = max(-nmax, min(nmax - 1, nearest_int(x[i] * sl2 / slx)))
                if new_l != L[i]:
                    fn = f32(new_l)
                    slx += w * x[i] * fn
                    sl2 += w * fn * fn
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[i] += nmax
    return sumlx / suml2 if suml2 > 0 else f32(0.0)


def q3_search(nmax):
    """make_q3_quants with do_rmse (Q3_K without importance weights), as search(n, x, L) -> scale: weights x^2,
    then up to 5 rounds of single-element moves that improve the fit. L[i] in [0, 2 nmax)."""
    def q3_search(n, x, L):
        return _make_q3_quants(n, nmax, x, L)
    return _jit_variant(q3_search, nmax)


@njit(inline="always", **_JIT)
def _make_qkx_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad, strict):
    mn = x[0]
    mx = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        w = weights[i]
        sum_w += w
        sum_x += w * x[i]
    if mn > 0:
        mn = f32(0.0)
    if (mx <= mn) if strict else (mx == mn):
        for i in range(n):
            L[i] = 0
        return f32(0.0), -mn
    iscale = f32(nmax) / (mx - mn)
    scale = f32(1.0) / iscale
    best_error = f32(0.0)
    for i in range(n):
        l = nearest_int(iscale * (x[i] - mn))
        L[i] = max(0, min(nmax, l))
        diff = scale * f32(L[i]) + mn - x[i]
        diff = abs(diff) if use_mad else diff * diff
        best_error += weights[i] * diff
    if nstep < 1:
        return scale, -mn
    for is_ in range(nstep + 1):
        iscale = (rmin + rdelta * f32(is_) + f32(nmax)) / (mx - mn)
        sum_l = f32(0.0)
        sum_l2 = f32(0.0)
        sum_xl = f32(0.0)
        for i in range(n):
            l = max(0, min(nmax, nearest_int(iscale * (x[i] - mn))))
            Laux[i] = l
            w = weights[i]
            fl = f32(l)
            sum_l += w * fl
            sum_l2 += w * fl * fl
            sum_xl += w * fl * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = f32(0.0)
                this_scale = sum_xl / sum_l2
            cur_error = f32(0.0)
            for i in range(n):
                diff = this_scale * f32(Laux[i]) + this_min - x[i]
                diff = abs(diff) if use_mad else diff * diff
                cur_error += weights[i] * diff
            if cur_error < best_error:
                for i in range(n):
                    L[i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                mn = this_min
    return scale, -mn


def qkx_search(nmax, rmin, rdelta, nstep, use_mad, strict):
    """The asymmetric (scale, min) search as search(n, x, weights, L, Laux) -> (scale, -min), L[i] in [0, nmax]:
    make_qkx2_quants with strict=False (gives up only when max == min), make_qkx3_quants with strict=True (gives up
    when max <= min); both try nstep + 1 inverse scales (rmin + rdelta*k + nmax) / (max - min)."""
    constants = (nmax, rmin, rdelta, nstep, use_mad, strict)
    rmin = f32(rmin)
    rdelta = f32(rdelta)

    def qkx_search(n, x, weights, L, Laux):
        return _make_qkx_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad, strict)
    return _jit_variant(qkx_search, *constants)


ROUND_MAGIC = f32(12582912.0)
ROUND_EXACT = f32(4194304.0)        # |v| below this: nearest_int(v) == (v + magic) - magic, as a float


@njit(inline="always", **_JIT)
def _clamped_code(v, top):
    r = (v + ROUND_MAGIC) - ROUND_MAGIC
    return max(f32(0.0), min(top, r))


@njit(inline="always", **_JIT)
def _make_qkx_quants_lanes(n, S, nmax, x, weights, L, scales, mins, rmin, rdelta, nstep, use_mad, strict, one):
    """_make_qkx_quants of S sub-blocks of n (one after another in x, weights, L) at once: sub-block j is lane j of
    every step, so that the serial chains of float adds of S sub-blocks overlap (2.4x for Q2_K's 16 x 16). Each lane
    goes through exactly the scalar search's steps and roundings (a lane's min moves only when its own error drops);
    a lane where the search gives up, or where a code would need nearest_int beyond +-2**22, is redone by `one`, the
    scalar search."""
    top = f32(nmax)
    xt = np.empty((n, S), np.float32)
    wt = np.empty((n, S), np.float32)
    Lt = np.empty((n, S), np.float32)
    La = np.empty((n, S), np.float32)
    for j in range(S):
        for i in range(n):
            xt[i, j] = x[j * n + i]
            wt[i, j] = weights[j * n + i]
    mn, mx, sum_w, sum_x = np.empty(S, np.float32), np.empty(S, np.float32), np.empty(S, np.float32), \
        np.empty(S, np.float32)
    iscale, scale, best, largest = np.empty(S, np.float32), np.empty(S, np.float32), np.empty(S, np.float32), \
        np.zeros(S, np.float32)
    sum_l, sum_l2, sum_xl, error = np.empty(S, np.float32), np.empty(S, np.float32), np.empty(S, np.float32), \
        np.empty(S, np.float32)
    step_scale, step_min, taken = np.empty(S, np.float32), np.empty(S, np.float32), np.empty(S, np.bool_)
    for j in range(S):
        mn[j] = xt[0, j]
        mx[j] = xt[0, j]
        sum_w[j] = wt[0, j]
        sum_x[j] = wt[0, j] * xt[0, j]
    for i in range(1, n):
        for j in range(S):
            v = xt[i, j]
            mn[j] = v if v < mn[j] else mn[j]
            mx[j] = v if v > mx[j] else mx[j]
            sum_w[j] += wt[i, j]
            sum_x[j] += wt[i, j] * v
    gives_up = np.empty(S, np.bool_)
    for j in range(S):
        mn[j] = f32(0.0) if mn[j] > 0 else mn[j]
        gives_up[j] = (mx[j] <= mn[j]) if strict else (mx[j] == mn[j])
        iscale[j] = top / (mx[j] - mn[j])
        scale[j] = f32(1.0) / iscale[j]
        best[j] = f32(0.0)
    for i in range(n):
        for j in range(S):
            v = iscale[j] * (xt[i, j] - mn[j])
            largest[j] = max(largest[j], abs(v))
            Lt[i, j] = _clamped_code(v, top)
            diff = scale[j] * Lt[i, j] + mn[j] - xt[i, j]
            best[j] += wt[i, j] * (abs(diff) if use_mad else diff * diff)
    for is_ in range(nstep + 1):
        for j in range(S):
            iscale[j] = (rmin + rdelta * f32(is_) + top) / (mx[j] - mn[j])
            sum_l[j] = f32(0.0)
            sum_l2[j] = f32(0.0)
            sum_xl[j] = f32(0.0)
            error[j] = f32(0.0)
        for i in range(n):
            for j in range(S):
                v = iscale[j] * (xt[i, j] - mn[j])
                largest[j] = max(largest[j], abs(v))
                fl = _clamped_code(v, top)
                La[i, j] = fl
                w = wt[i, j]
                sum_l[j] += w * fl
                sum_l2[j] += w * fl * fl
                sum_xl[j] += w * fl * xt[i, j]
        for j in range(S):
            D = sum_w[j] * sum_l2[j] - sum_l[j] * sum_l[j]
            this_scale = (sum_w[j] * sum_xl[j] - sum_x[j] * sum_l[j]) / D
            this_min = (sum_l2[j] * sum_x[j] - sum_l[j] * sum_xl[j]) / D
            if this_min > 0:
                this_min = f32(0.0)
                this_scale = sum_xl[j] / sum_l2[j]
            step_scale[j] = this_scale if D > 0 else f32(np.nan)      # (NaN: no error compares below the best)
            step_min[j] = this_min
        for i in range(n):
            for j in range(S):
                diff = step_scale[j] * La[i, j] + step_min[j] - xt[i, j]
                error[j] += wt[i, j] * (abs(diff) if use_mad else diff * diff)
        for j in range(S):
            taken[j] = error[j] < best[j]
            best[j] = error[j] if taken[j] else best[j]
            scale[j] = step_scale[j] if taken[j] else scale[j]
            mn[j] = step_min[j] if taken[j] else mn[j]
        for i in range(n):
            for j in range(S):
                Lt[i, j] = La[i, j] if taken[j] else Lt[i, j]
    for j in range(S):
        o = j * n
        if gives_up[j] or not largest[j] < ROUND_EXACT:
            scales[j], mins[j] = one(n, x[o:o + n], weights[o:o + n], L[o:o + n], L[o:o + n].copy())
            continue
        for i in range(n):
            L[o + i] = np.uint8(Lt[i, j])
        scales[j] = scale[j]
        mins[j] = -mn[j]


def qkx_lanes_search(nmax, rmin, rdelta, nstep, use_mad, strict):
    """qkx_search's search for S sub-blocks of n at once, as search(n, S, x, weights, L, scales, mins): the same
    codes, scales and mins as S calls of qkx_search(...) (_make_qkx_quants_lanes)."""
    constants = (nmax, rmin, rdelta, nstep, use_mad, strict)
    one = qkx_search(*constants)
    rmin = f32(rmin)
    rdelta = f32(rdelta)

    def qkx_lanes_search(n, S, x, weights, L, scales, mins):
        _make_qkx_quants_lanes(n, S, nmax, x, weights, L, scales, mins, rmin, rdelta, nstep, use_mad, strict, one)
    return _jit_variant(qkx_lanes_search, *constants)


@njit(inline="always", **_JIT)
def _make_qp_quants(n, nmax, x, L, quant_weights):
    mx = f32(0.0)
    for i in range(n):
        mx = mx if mx > x[i] else x[i]
    if mx < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return f32(0.0)
    iscale = f32(nmax) / mx
    for i in range(n):
        L[i] = nearest_int(iscale * x[i]) & 0xFF
    scale = f32(1.0) / iscale
    best_mse = f32(0.0)
    for i in range(n):
        diff = x[i] - scale * f32(L[i])
        best_mse += quant_weights[i] * diff * diff
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = (f32(0.1) * f32(is_) + f32(nmax)) / mx
        scale_is = f32(1.0) / iscale_is
        mse = f32(0.0)
        for i in range(n):
            l = min(nmax, nearest_int(iscale_is * x[i]))
            diff = x[i] - scale_is * f32(l)
            mse += quant_weights[i] * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = f32(0.0)
    suml2 = f32(0.0)
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = l & 0xFF
        w = quant_weights[i]
        fl = f32(l)
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = quant_weights[i]
            li = f32(L[i])
            slx = sumlx - w * x[i] * li
            sl2 = suml2 - w * li * li
            if slx > 0 and sl2 > 0:
                new_l = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_l != L[i]:
                    fn = f32(new_l)
                    slx += w * x[i] * fn
                    sl2 += w * fn * fn
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > 0 else f32(0.0)


def qp_search(nmax):
    """make_qp_quants (the sub-block scales of the imatrix K-quants) as search(n, x, L, weights) -> scale:
    positive codes up to nmax, 9 trial scales, then up to 5 rounds of single-element moves. L holds the codes as
    the C uint8_t array does (a negative code wraps)."""
    def qp_search(n, x, L, quant_weights):
        return _make_qp_quants(n, nmax, x, L, quant_weights)
    return _jit_variant(qp_search, nmax)


# ------------------------------------------------------------------------------------------------ lattice (IQ) steps
# Steps that llama.cpp's IQ1/IQ2/IQ3 quantizers write out alike in each quantize_row_iq*_impl; written once here,
# inlined into each kernel (the same float operations in the same order as the reference's loops).


@njit(inline="always", **_JIT)
def sum_of_squares(xb, o, n):
    """sum x^2 of xb[o:o+n], sequentially (the super-block's sumx2, from which sigma2 is taken)."""
    s = f32(0.0)
    for i in range(n):
        v = xb[o + i]
        s += v * v
    return s


@njit(inline="always", **_JIT)
def imatrix_weights(weight, xb, o, n, qwb, sigma2):
    """weight[i] = qw * sqrt(sigma2 + x^2) for xb[o:o+n] (qwb[o:o+n]): the IQ types' importance weighting."""
    for i in range(n):
        v = xb[o + i]
        weight[i] = qwb[o + i] * np.sqrt(sigma2 + v * v)


@njit(inline="always", **_JIT)
def sqrt_weights(waux, weight, n):
    """waux = sqrt(weight): the neighbour searches weigh squared differences by it."""
    for i in range(n):
        waux[i] = np.sqrt(weight[i])


@njit(inline="always", **_JIT)
def max_of(xval, n):
    """max of xval[0:n], the reference's `mx = mx > v ? mx : v` scan (NaN handling included)."""
    mx = xval[0]
    for i in range(1, n):
        v = xval[i]
        mx = mx if mx > v else v
    return mx


@njit(inline="always", **_JIT)
def abs_and_signs(xb, o, xval, n):
    """|x| of xb[o:o+n] into xval; returns the sign bits (1 = negative), bit i for element i (n <= 32)."""
    s = 0
    for i in range(n):
        v = xb[o + i]
        if v >= 0:
            xval[i] = v
        else:
            xval[i] = -v
            s |= 1 << i
    return s


@njit(inline="always", **_JIT)
def abs_and_even_signs(xb, o, weight, xval, n):
    """|x| of xb[o:o+n] into xval and 7 sign bits per 8 (IQ2_XXS, IQ2_XS, IQ3_XXS store only these; the 8th sign
    is implied by an even count). With an odd count the element of least weight * x^2 is negated in xval and its
    bit toggled. Returns the bits of group k at bit 7 k (n <= 32: at most 28 bits)."""
    packed = 0
    for k in range(n // 8):
        nflip = 0
        s = 0
        for i in range(8):
            v = xb[o + 8 * k + i]
            if v >= 0:
                xval[8 * k + i] = v
            else:
                xval[8 * k + i] = -v
                nflip += 1
                s |= 1 << i
        if nflip % 2:
            imin = 0
            v = xb[o + 8 * k]
            mn = weight[8 * k] * v * v
            for i in range(1, 8):
                v = xb[o + 8 * k + i]
                ax = weight[8 * k + i] * v * v
                if ax < mn:
                    mn = ax
                    imin = i
            xval[8 * k + imin] = -xval[8 * k + imin]
            s ^= 1 << imin
        packed |= (s & 127) << (7 * k)
    return packed


@njit(inline="always", **_JIT)
def odd_code_fit(weight, xval, L, n):
    """(sum w x q, sum w q^2) of the odd codes q = 2 L + 1, in the reference's order (IQ2 and IQ3 refits)."""
    sumqx = f32(0.0)
    sumq2 = f32(0.0)
    for i in range(n):
        w = weight[i]
        q = f32(2 * np.int64(L[i]) + 1)
        sumqx += w * xval[i] * q
        sumq2 += w * q * q
    return sumqx, sumq2


@njit(inline="always", **_JIT)
def grid_index(kmap, L, o, n, bits):
    """kmap's entry for the level pattern L[o:o+n] (levels packed `bits` apart): a grid index, or < 0 off the grid."""
    u = 0
    for i in range(n):
        u |= np.int64(L[o + i]) << (bits * i)
    return np.int64(kmap[u])


@njit(inline="always", **_JIT)
def scale_level(iscale, scale, lmax):
    """The sub-block scale's level l in 0..lmax, scale ~ (2 l + 1) / iscale (the IQ types' odd multiples of d)."""
    return max(0, min(lmax, nearest_int(f32(0.5) * (iscale * scale - f32(1.0)))))
