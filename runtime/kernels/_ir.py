"""Tiny LLVM intrinsics that numba lacks.

numba types every integer operation on small ints as int64, so a loop that masks nibbles out of uint8 bytes is
vectorized 8 lanes wide (vpmovzxbq + vcvtqq2ps) instead of 16. These helpers keep the work in the narrow type
and let LLVM pick its own instructions (portable IR, no target-specific intrinsics): fp16 -> f32 becomes
vcvtph2ps on x86 with F16C.
"""
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

_F32 = ir.FloatType()
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)


def _to_int(builder, value, src_type, bits):
    dst = ir.IntType(bits)
    width = src_type.bitwidth
    if width > bits:
        return builder.trunc(value, dst)
    if width < bits:
        return builder.zext(value, dst)
    return value


@intrinsic
def f16_to_f32(typingctx, h):
    """IEEE half (its 16 bits in any integer) -> float32, exact."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        bits = _to_int(builder, args[0], signature.args[0], 16)
        return builder.fpext(builder.bitcast(bits, ir.HalfType()), _F32)

    return types.float32(h), codegen


@intrinsic
def f32_to_f16_bits(typingctx, x):
    """The bits of the IEEE half nearest float32 x (ties to even, past 65504 inf; vcvtps2ph), as uint16."""
    if not isinstance(x, types.Float) or x.bitwidth != 32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), _I16)

    return types.uint16(x), codegen


@intrinsic
def bf16_to_f32(typingctx, h):
    """bfloat16 (its 16 bits in any integer) -> float32, exact."""
    if not isinstance(h, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        bits = _to_int(builder, args[0], signature.args[0], 16)
        wide = builder.shl(builder.zext(bits, _I32), ir.Constant(_I32, 16))
        return builder.bitcast(wide, _F32)

    return types.float32(h), codegen


@intrinsic
def pow2i(typingctx, n):
    """2.0 ** n as float32 for an integer n in -126..127, built from its exponent bits (no libm call, so a loop
    using it still vectorizes)."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        e = builder.add(_to_int(builder, args[0], signature.args[0], 32), ir.Constant(_I32, 127))
        return builder.bitcast(builder.shl(e, ir.Constant(_I32, 23)), _F32)

    return types.float32(n), codegen


@intrinsic
def ubits(typingctx, b, shift, mask):
    """float32((b >> shift) & mask) computed in b's own width (b an unsigned byte)."""
    if not (isinstance(b, types.Integer) and isinstance(shift, types.Integer) and isinstance(mask, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        tb = signature.args[0]
        s = _to_int(builder, args[1], signature.args[1], tb.bitwidth)
        m = _to_int(builder, args[2], signature.args[2], tb.bitwidth)
        v = builder.and_(builder.lshr(args[0], s), m)
        return builder.uitofp(v, _F32)

    return types.float32(b, shift, mask), codegen


@intrinsic
def bit_select(typingctx, b, bit, v):
    """v if bit `bit` of the byte b is set else 0.0 (compare and select in b's width: a mask register on AVX-512)."""
    if not (isinstance(b, types.Integer) and isinstance(bit, types.Integer) and isinstance(v, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        tb = signature.args[0]
        ty = ir.IntType(tb.bitwidth)
        one = ir.Constant(ty, 1)
        m = builder.shl(one, _to_int(builder, args[1], signature.args[1], tb.bitwidth))
        nz = builder.icmp_unsigned("!=", builder.and_(args[0], m), ir.Constant(ty, 0))
        return builder.select(nz, args[2], ir.Constant(args[2].type, 0.0))

    return v(b, bit, v), codegen


def widen(v):
    """A block scale as float32: f32 as is, u16 as the fp16 it holds. Only for numba-compiled code (the overload
    below is the implementation); called from Python it refuses."""
    raise TypeError("widen() works inside numba-compiled kernels only")


@overload(widen, inline="always")
def _widen(v):
    if isinstance(v, types.Float):
        return lambda v: v
    if isinstance(v, types.Integer):
        return lambda v: f16_to_f32(v)
    return None


def _load_le(bits):
    """An intrinsic: the little-endian `bits`-bit unsigned integer at byte p of a uint8 array, as int64, in one
    unaligned load (x86 and AArch64 are little-endian; numba's byte-by-byte assembly stays four loads and shifts)."""
    def codegen(context, builder, signature, args):
        arr_t = signature.args[0]
        data = context.make_array(arr_t)(context, builder, args[0]).data
        p = builder.gep(data, [args[1]])
        v = builder.load(builder.bitcast(p, ir.IntType(bits).as_pointer()), align=1)
        return builder.zext(v, ir.IntType(64))

    def typer(typingctx, src, p):
        if isinstance(src, types.Array) and src.dtype == types.uint8 and isinstance(p, types.Integer):
            return types.int64(src, p), codegen
        return None

    return intrinsic(typer)


load_u16 = _load_le(16)
load_u32 = _load_le(32)
