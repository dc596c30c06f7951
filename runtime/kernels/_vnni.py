"""Integer block dot products with AVX-512 VNNI, llama.cpp's way: activations quantized to int8 (Q8_0), weights int8,
products summed exactly in int32 by vpdpbusd, one float multiply-add per block.

numba types every integer operation as int64, so an int8 dot product written in Python vectorizes 8 lanes wide at
best (vpmovsxbq + vpmuldq, 11 G products/s on one core here) - slower than converting to float. This intrinsic
writes the loop in LLVM IR instead: 64 codes (two 32-blocks) a step, |w| * (x with w's sign) through vpdpbusd into
16 int32 lanes (lanes 0-7 the first block, 8-15 the second), converted and scaled by the two blocks' d_w * d_x in
a 16-float accumulator, summed once per row. On one core of this machine: 20-27 G weights/s vs 10-17 for the float
kernel on the same I8 plane (bench/KERNELS.md).

Only where the CPU has AVX-512 VNNI and numba compiles for the host (HAS_VNNI); elsewhere the float kernels run.
"""
from llvmlite import binding, ir
from numba import types
from numba.core import config
from numba.extending import intrinsic

_F32 = ir.FloatType()
_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V64I8 = ir.VectorType(_I8, 64)
_V16I32 = ir.VectorType(_I32, 16)
_V16F = ir.VectorType(_F32, 16)


def _host_has_vnni():
    if config.CPU_NAME not in (None, "host"):       # compiling for another CPU (NUMBA_CPU_NAME): stay portable
        return False
    try:
        features = binding.get_host_cpu_features()
    except RuntimeError:
        return False
    return bool(features.get("avx512vnni")) and bool(features.get("avx512bw"))


HAS_VNNI = _host_has_vnni()


def _declare(module, name, ret, args):
    fn = module.globals.get(name)
    return fn if fn is not None else ir.Function(module, ir.FunctionType(ret, args), name=name)


def _data(context, builder, arr_type, arr, elem):
    return builder.bitcast(context.make_array(arr_type)(context, builder, arr).data, elem.as_pointer())


@intrinsic
def i8_pairs_dot(typingctx, wq, wd, xq, xd, npairs):
    """sum over the first 2*npairs 32-blocks b of fp16(wd[b]) * xd[b] * (wq[b] . xq[b]), the block dot products
    exact in int32. wq, xq: int8 codes (|xq| <= 127, as Q8_0 quantization gives); wd: uint16 holding fp16;
    xd: float32."""
    ok = (isinstance(wq, types.Array) and wq.dtype == types.int8 and isinstance(xq, types.Array)
          and xq.dtype == types.int8 and isinstance(wd, types.Array) and wd.dtype == types.uint16
          and isinstance(xd, types.Array) and xd.dtype == types.float32 and isinstance(npairs, types.Integer))
    if not ok:
        return None

    def codegen(context, builder, signature, args):
        wq_p = _data(context, builder, signature.args[0], args[0], _I8)
        wd_p = _data(context, builder, signature.args[1], args[1], _I16)
        xq_p = _data(context, builder, signature.args[2], args[2], _I8)
        xd_p = _data(context, builder, signature.args[3], args[3], _F32)
        n = builder.sext(args[4], _I64) if args[4].type.width < 64 else args[4]
        module = builder.module
        dpbusd = _declare(module, "llvm.x86.avx512.vpdpbusd.512", _V16I32, [_V16I32, _V64I8, _V64I8])
        absb = _declare(module, "llvm.abs.v64i8", _V64I8, [_V64I8, ir.IntType(1)])
        fsum = _declare(module, "llvm.vector.reduce.fadd.v16f32", _F32, [_F32, _V16F])

        entry = builder.block
        head = builder.append_basic_block("pairs.head")
        body = builder.append_basic_block("pairs.body")
        done = builder.append_basic_block("pairs.done")
        builder.branch(head)

        builder.position_at_end(head)
        i = builder.phi(_I64)
        acc = builder.phi(_V16F)
        i.add_incoming(ir.Constant(_I64, 0), entry)
        acc.add_incoming(ir.Constant(_V16F, None), entry)
        builder.cbranch(builder.icmp_signed("<", i, n), body, done)

        builder.position_at_end(body)
        offset = builder.mul(i, ir.Constant(_I64, 64))
        w = builder.load(builder.bitcast(builder.gep(wq_p, [offset]), _V64I8.as_pointer()), align=1)
        x = builder.load(builder.bitcast(builder.gep(xq_p, [offset]), _V64I8.as_pointer()), align=1)
        # vpdpbusd multiplies unsigned by signed bytes: |w| (a code -128 becomes 128 unsigned, still right) times
        # x carrying w's sign (|x| <= 127, so negating it cannot overflow)
        w_abs = builder.call(absb, [w, ir.Constant(ir.IntType(1), 0)])
        x_signed = builder.select(builder.icmp_signed("<", w, ir.Constant(_V64I8, None)),
                                  builder.sub(ir.Constant(_V64I8, None), x), x)
        dot = builder.call(dpbusd, [ir.Constant(_V16I32, None), w_abs, x_signed])

        def block_scale(b):
            wd_h = builder.bitcast(builder.load(builder.gep(wd_p, [b])), ir.HalfType())
            return builder.fmul(builder.fpext(wd_h, _F32), builder.load(builder.gep(xd_p, [b])))

        first = builder.mul(i, ir.Constant(_I64, 2))
        scales = builder.insert_element(ir.Constant(_V16F, None), block_scale(first), ir.Constant(_I32, 0))
        scales = builder.insert_element(scales, block_scale(builder.add(first, ir.Constant(_I64, 1))),
                                        ir.Constant(_I32, 8))
        scales = builder.shuffle_vector(scales, scales, ir.Constant(ir.VectorType(_I32, 16), [0] * 8 + [8] * 8))
        product = builder.fmul(builder.sitofp(dot, _V16F), scales, flags=("contract",))
        new_acc = builder.fadd(acc, product, flags=("contract",))
        i.add_incoming(builder.add(i, ir.Constant(_I64, 1)), body)
        acc.add_incoming(new_acc, body)
        builder.branch(head)

        builder.position_at_end(done)
        return builder.call(fsum, [ir.Constant(_F32, 0.0), acc], fastmath=("reassoc",))

    return types.float32(wq, wd, xq, xd, npairs), codegen
