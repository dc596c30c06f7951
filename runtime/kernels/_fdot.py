"""Float row dot products (F32, F16, BF16 weights times f32 activations) as LLVM IR loops.

rows_dot_T(out, x, w, r0, r1) sets out[r] = w[r, :n16] . x[:n16] for r0 <= r < r1, n16 = the row length rounded
down to 16 (the caller adds the few remaining columns). Each row is one loop of 64 elements a step: 16 weights widened
to f32 (F16: an `fpext` of <16 x half>, vcvtph2ps on x86; BF16: a 16-bit shift; F32: a plain load) times x into four
16-lane accumulators by `llvm.fma`, summed once per row. Portable IR (no target-specific intrinsics): without AVX-512
LLVM splits the 16 lanes into what the CPU has.

Why rows one at a time: the weights come from memory once per token, and this CPU's prefetchers follow one
sequential stream per core well and several interleaved ones badly. Two or four rows sharing each load of x (fewer
loads, one reduction for four rows) ran a few percent faster in cache but at half the speed from memory
(4-row blocks: 22 vs 47 GB/s on 2 threads over a SmolLM2 token's matrices), so a core reads its rows in order.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_F32 = ir.FloatType()
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
LANES = 16
STEPS = 4                   # 16-lane steps (accumulators) per loop iteration
_VF = ir.VectorType(_F32, LANES)
_VH = ir.VectorType(_I16, LANES)


def _declare(module, name, ret, args):
    fn = module.globals.get(name)
    return fn if fn is not None else ir.Function(module, ir.FunctionType(ret, args), name=name)


def _c(v):
    return ir.Constant(_I64, v)


def _load_weights(builder, kind, p, off):
    """The 16 weights at element offset off of p as <16 x float> (exact)."""
    if kind == "f32":
        return builder.load(builder.bitcast(builder.gep(p, [off]), _VF.as_pointer()), align=4)
    h = builder.load(builder.bitcast(builder.gep(p, [off]), _VH.as_pointer()), align=2)
    if kind == "f16":
        return builder.fpext(builder.bitcast(h, ir.VectorType(ir.HalfType(), LANES)), _VF)
    wide = builder.shl(builder.zext(h, ir.VectorType(_I32, LANES)), ir.Constant(ir.VectorType(_I32, LANES), [16] * LANES))
    return builder.bitcast(wide, _VF)


def _rows_dot(kind):
    def codegen(context, builder, signature, args):
        out_t, x_t, w_t = signature.args[:3]
        out_a = context.make_array(out_t)(context, builder, args[0])
        x_a = context.make_array(x_t)(context, builder, args[1])
        w_a = context.make_array(w_t)(context, builder, args[2])
        wp = builder.bitcast(w_a.data, (_F32 if kind == "f32" else _I16).as_pointer())
        xp = builder.bitcast(x_a.data, _F32.as_pointer())
        op = builder.bitcast(out_a.data, _F32.as_pointer())
        cols = cgutils.unpack_tuple(builder, w_a.shape, 2)[1]
        r0, r1 = args[3], args[4]
        n16 = builder.and_(cols, _c(-LANES))
        nmain = builder.udiv(n16, _c(LANES * STEPS))
        main_end = builder.mul(nmain, _c(LANES * STEPS))
        nrest = builder.udiv(builder.sub(n16, main_end), _c(LANES))
        fma = _declare(builder.module, "llvm.fma.v16f32", _VF, [_VF, _VF, _VF])
        fsum = _declare(builder.module, "llvm.vector.reduce.fadd.v16f32", _F32, [_F32, _VF])
        accs = [cgutils.alloca_once(builder, _VF) for _ in range(STEPS)]

        def step(row_p, off, acc):
            xv = builder.load(builder.bitcast(builder.gep(xp, [off]), _VF.as_pointer()), align=4)
            builder.store(builder.call(fma, [_load_weights(builder, kind, row_p, off), xv, builder.load(acc)]), acc)

        with cgutils.for_range(builder, r1, start=r0) as row:
            row_p = builder.gep(wp, [builder.mul(row.index, cols)])
            for a in accs:
                builder.store(ir.Constant(_VF, None), a)
            with cgutils.for_range(builder, nmain) as loop:
                base = builder.mul(loop.index, _c(LANES * STEPS))
                for s in range(STEPS):
                    step(row_p, builder.add(base, _c(LANES * s)), accs[s])
            with cgutils.for_range(builder, nrest) as loop:
                step(row_p, builder.add(main_end, builder.mul(loop.index, _c(LANES))), accs[0])
            v = [builder.load(a) for a in accs]
            total = builder.fadd(builder.fadd(v[0], v[1]), builder.fadd(v[2], v[3]))
            s = builder.call(fsum, [ir.Constant(_F32, 0.0), total], fastmath=("reassoc",))
            builder.store(s, builder.gep(op, [row.index]))
        return context.get_dummy_value()
    return codegen


def _signature(out, x, w, r0, r1, dtype):
    ok = (isinstance(out, types.Array) and out.dtype == types.float32 and out.ndim == 1 and out.layout == "C"
          and isinstance(x, types.Array) and x.dtype == types.float32 and x.ndim == 1 and x.layout == "C"
          and isinstance(w, types.Array) and w.dtype == dtype and w.ndim == 2 and w.layout == "C"
          and isinstance(r0, types.Integer) and isinstance(r1, types.Integer))
    return types.none(out, x, w, types.int64, types.int64) if ok else None


@intrinsic
def rows_dot_f32(typingctx, out, x, w, r0, r1):
    """out[r] = w[r, :n16] . x[:n16] for r in [r0, r1): w float32 (rows, cols) C-contiguous, n16 = cols & ~15."""
    sig = _signature(out, x, w, r0, r1, types.float32)
    return (sig, _rows_dot("f32")) if sig is not None else None


@intrinsic
def rows_dot_f16(typingctx, out, x, w, r0, r1):
    """rows_dot_f32 for w uint16 holding IEEE halves."""
    sig = _signature(out, x, w, r0, r1, types.uint16)
    return (sig, _rows_dot("f16")) if sig is not None else None


@intrinsic
def rows_dot_bf16(typingctx, out, x, w, r0, r1):
    """rows_dot_f32 for w uint16 holding bfloat16."""
    sig = _signature(out, x, w, r0, r1, types.uint16)
    return (sig, _rows_dot("bf16")) if sig is not None else None
