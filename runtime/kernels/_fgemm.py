"""The float GEMM on x86 (AVX2, AVX-VNNI, AVX-512): prefill for the types without an integer GEMM on this path (F16,
BF16, F32, and any other whose rows only decode to floats).

_common.gemm_tile computes dot products: each (row, token) pair a vector accumulator over the columns, summed
across lanes at the end; with 16 ymm registers that fits 2 rows x 4 tokens, 6 loads per 8 multiply-adds. Here the
lanes are tokens instead (BLAS's outer product; on ymm the 6 x 16 shape of BLIS's AVX2 kernel, on zmm 12 x 32): the
activations are packed once per call in groups of GROUP tokens, each group's columns one after the other (xp: group
g's column k is the GROUP floats at g * K * GROUP + k * GROUP; zeros past the last token; a last group of LANES where
the tokens padded to LANES leave one), and a panel of PANEL rows of the decoded tile multiplies a group at once: per
column, two vector loads of the group and a broadcast of each row's weight, 2 * PANEL fused multiply-adds into as
many registers (12 of 16 ymm, 24 of 32 zmm). The
columns run in chunks small enough that every group's share of a chunk stays in L2 (X_CHUNK floats in all; from 128
tokens on the panel's rows are then in L1 too); each chunk adds to the sums in res[j, t] the chunk before left (the
caller copies them into out[t, r0 + j] at the end). panel_gemm trusts its caller's shapes (_common._outer_matmul).
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ._isa import REGISTERS_32
from ._vnni import _F32, _as_i64, _c64, _data, _splat, _vec_load, counted_loop

LANES = 16 if REGISTERS_32 else 8      # floats a vector: zmm with AVX-512, else ymm
PANEL = 12 if REGISTERS_32 else 6      # weight rows sharing each load of the activations: 24 of 32 zmm, 12 of 16 ymm
GROUP = 2 * LANES  # tokens sharing each broadcast weight: two vectors
X_CHUNK = 1 << 16  # floats of the activations a column chunk spans (256 KiB: half a Zen 3 core's L2)
_VF = ir.VectorType(_F32, LANES)


def _fma(b, acc, u, v):
    return b.fadd(acc, b.fmul(u, v, flags=("contract",)), flags=("contract",))


def _panel_codegen(context, builder, signature, args):
    sig = signature.args
    res_p = _data(context, builder, sig[0], args[0], _F32)
    w_p = _data(context, builder, sig[1], args[1], _F32)
    xp_p = _data(context, builder, sig[2], args[2], _F32)
    rows, npad, k_len, k0, k1 = (_as_i64(builder, a) for a in args[3:8])
    first = builder.icmp_signed("==", k0, _c64(0))

    def group(b, j0, t0, width):
        """res[j0 + j, t0 : t0 + width] (+)= the chunk's products, for the panel's rows j; width GROUP or LANES."""
        nvec = width // LANES
        base = b.mul(t0, k_len)                 # the group's first column
        wrows = [b.mul(b.add(j0, _c64(j)), k_len) for j in range(PANEL)]
        dsts = [b.bitcast(b.gep(res_p, [b.add(b.add(b.mul(b.add(j0, _c64(j)), npad), t0), _c64(LANES * v))]),
                          _VF.as_pointer()) for j in range(PANEL) for v in range(nvec)]
        zero = ir.Constant(_VF, None)
        starts = [b.select(first, zero, b.load(d, align=4)) for d in dsts]

        def column(bb, k, accs):
            at = bb.add(base, bb.mul(k, _c64(width)))
            xs = [_vec_load(bb, xp_p, bb.add(at, _c64(LANES * v)), _VF) for v in range(nvec)]
            new = list(accs)
            for j in range(PANEL):
                wj = _splat(bb, bb.load(bb.gep(w_p, [bb.add(wrows[j], k)])), _VF)
                for v in range(nvec):
                    new[j * nvec + v] = _fma(bb, new[j * nvec + v], xs[v], wj)
            return new

        _, accs = counted_loop(b, k0, k1, _c64(1), [(_VF, s) for s in starts], column, "col")
        for acc, d in zip(accs, dsts):
            b.store(acc, d, align=4)

    def panel(b, j0, _):
        def full(bb, t0, __):
            group(bb, j0, t0, GROUP)
            return []

        t_end, _ = counted_loop(b, _c64(0), npad, _c64(GROUP), [], full, "group")

        def last(bb, t0, __):
            group(bb, j0, t0, LANES)
            return []

        counted_loop(b, t_end, npad, _c64(LANES), [], last, "last")
        return []

    counted_loop(builder, _c64(0), rows, _c64(PANEL), [], panel, "panel")
    return context.get_dummy_value()


def _c_f32(t, ndim):
    return isinstance(t, types.Array) and t.layout == "C" and t.dtype == types.float32 and t.ndim == ndim


@intrinsic
def panel_gemm(typingctx, res, w, xp, rows, npad, k_len, k0, k1):
    """res[j, t] = (res[j, t] if k0 > 0 else 0) + sum over k0 <= k < k1 of w[j, k] x[t, k], for j < rows (a
    multiple of PANEL) and t < npad (a multiple of LANES): w (rows, k_len) and res (rows, npad) float32 C-contiguous, xp
    the activations packed by pack_tokens (k_len * npad floats)."""
    ok = (_c_f32(res, 2) and _c_f32(w, 2) and _c_f32(xp, 1)
          and all(isinstance(a, types.Integer) for a in (rows, npad, k_len, k0, k1)))
    return (types.void(res, w, xp, rows, npad, k_len, k0, k1), _panel_codegen) if ok else None


@njit(cache=True, inline="always")
def padded_tokens(n):
    return (n + LANES - 1) // LANES * LANES


@njit(cache=True, parallel=True)
def pack_tokens(xp, x):
    """xp (padded_tokens(n) * K floats) = x (n, K) in panel_gemm's order: groups of GROUP tokens (the last of LANES
    where the padding leaves one), each group's columns one after the other, zeros past token n."""
    n, k_len = x.shape
    npad = xp.shape[0] // k_len
    ngroups = (npad + GROUP - 1) // GROUP
    for g in prange(ngroups):
        t0 = g * GROUP
        width = min(GROUP, npad - t0)
        base = t0 * k_len
        for i in range(width):
            t = t0 + i
            if t < n:
                for k in range(k_len):
                    xp[base + k * width + i] = x[t, k]
            else:
                for k in range(k_len):
                    xp[base + k * width + i] = np.float32(0.0)


@njit(cache=True, inline="always")
def column_chunk(k_len, npad):
    """Columns per chunk: the chunks of equal length (to 8 columns), each within X_CHUNK floats of activations or
    64 columns."""
    limit = max(64, X_CHUNK // npad)
    count = (k_len + limit - 1) // limit
    return ((k_len + count - 1) // count + 7) // 8 * 8
