"""The instruction-level steps of the integer kernels, one implementation per kernel path (kvant.formats.host).

The kernels (_vnni.py, _vnni16.py, _gemm.py) are written once in LLVM IR on 512-bit values (16 int32 lanes, 64
bytes) and call these steps; on a 256-bit path LLVM splits every value into two ymm registers, on AArch64 into four
128-bit ones. Where that split came out badly (spills), the 256-bit paths have their own steps on ymm values
(_avx2.py, _vnni16._block_dot16_256, _gemm._gemm_codegen_256).

dot4(acc, u, s): acc + in each int32 lane the sum of 4 products of unsigned bytes u and signed bytes s.
- avx512vnni: vpdpbusd.
- avxvnni (Alder Lake and later, Zen 5): vpdpbusd on ymm halves (the VEX encoding).
- avx2 (no int8 dot product, as ggml's AVX2 kernels): vpmaddubsw multiplies the bytes and adds neighbours into
  int16, saturating, then vpmaddwd by ones adds pairs of those into int32. Exact while a pair of products fits int16:
  true for codes u <= 128 against activation codes s in -127..127 (2 * 128 * 127 = 32512). The types whose unsigned
  codes are a signed value + 128 (Q8_0, the IQ4 codebook: `wide`) go the other way: w = u - 128 is signed, so the
  product is |w| times s with w's sign (vpsignb), and what comes out is the dot product of w, without the 128 * sum(s)
  the unsigned codes carry. WIDE_UNBIASED says so: the caller then leaves out its -128 * sum(s) term.
- i8mm (AArch64 with the Armv8.6 int8 matrix extension: Apple M2 and later, Graviton 3, Neoverse V1/N2, Snapdragon
  X): usdot, vpdpbusd's arithmetic on 128-bit registers, four to a 512-bit value; the prefill GEMM multiplies by
  usmmla, the 2 x 8 by 8 x 2 int8 matrix product, instead (_gemm._gemm_codegen_mmla).
- dotprod (AArch64 with the Armv8.2 dot product: Apple M1, Graviton 2, Neoverse N1, Cortex-A76 in a Raspberry Pi 5):
  sdot, whose bytes are both signed. The codes that are not wide are below 128 (at most 6 bits), so they are the same
  bytes read as signed; wide codes are flipped to w = u - 128 (an xor of the top bit) and, as on avx2, the result
  leaves out 128 * sum(s) (WIDE_UNBIASED).
"""
from dataclasses import dataclass
from typing import Callable

from llvmlite import ir

from kvant.formats.host import CPU_PATH, PATH_ERROR

if PATH_ERROR is not None:        # KVANT_CPU_PATH asked for a path this CPU cannot run: refuse before compiling
    raise PATH_ERROR

# The fast-math flags the kernels compile with (njit(fastmath=FAST)): reassociation (vectorized sums), contraction
# (FMA), no signed zeros, reciprocals. Not nnan / ninf: with those LLVM may assume a NaN away (a max that skips it,
# x * 0 folded to 0), and a corrupt weight must still reach the sampler's check of the logits as NaN (tests).
FAST = {"reassoc", "contract", "nsz", "arcp"}

_I8, _I16, _I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
_V32I8, _V64I8 = ir.VectorType(_I8, 32), ir.VectorType(_I8, 64)
_V16I16, _V8I32, _V16I32 = ir.VectorType(_I16, 16), ir.VectorType(_I32, 8), ir.VectorType(_I32, 16)
_V16I8, _V4I32 = ir.VectorType(_I8, 16), ir.VectorType(_I32, 4)
_V32I16 = ir.VectorType(_I16, 32)


def _declare(module, name, ret, args):
    fn = module.globals.get(name)
    return fn if fn is not None else ir.Function(module, ir.FunctionType(ret, args), name=name)


def parts(builder, v, count):
    """A vector as `count` equal pieces, lowest lanes first (a 512-bit value as its four 128-bit registers)."""
    n = v.type.count // count
    return [builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), list(range(k * n, k * n + n))))
            for k in range(count)]


def halves(builder, v):
    """The low and high halves of a vector (a 512-bit value as its two ymm)."""
    return parts(builder, v, 2)


def join(builder, lo, hi):
    """Two vectors as one of twice the lanes, lo first."""
    n = lo.type.count
    return builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(_I32, 2 * n), list(range(2 * n))))


def join_all(builder, pieces):
    """Vectors of equal type as one, the first lowest (parts' inverse)."""
    while len(pieces) > 1:
        pieces = [join(builder, pieces[k], pieces[k + 1]) for k in range(0, len(pieces), 2)]
    return pieces[0]


def per_part(builder, count, step, *vectors):
    """step applied to the matching pieces of each vector (parts), joined again."""
    return join_all(builder, [step(*pieces) for pieces in zip(*(parts(builder, v, count) for v in vectors))])


def _dot4_avx512vnni(builder, acc, u, s, wide):
    fn = _declare(builder.module, "llvm.x86.avx512.vpdpbusd.512", _V16I32, [_V16I32, _V64I8, _V64I8])
    return builder.call(fn, [acc, u, s])


def maddubs(builder, u, s):
    """vpmaddubsw (AVX2, 32 bytes): i16 lanes of u0 s0 + u1 s1 (u unsigned, s signed bytes), saturating."""
    fn = _declare(builder.module, "llvm.x86.avx2.pmadd.ub.sw", _V16I16, [_V32I8, _V32I8])
    return builder.call(fn, [u, s])


def maddwd(builder, a, c):
    """vpmaddwd (AVX2): i32 lanes of a0 c0 + a1 c1 (signed i16)."""
    fn = _declare(builder.module, "llvm.x86.avx2.pmadd.wd", _V8I32, [_V16I16, _V16I16])
    return builder.call(fn, [a, c])


def signed_pair(builder, u, s, biased=True):
    """(|w|, s with w's sign) for w = u - 128 (biased) or u as signed bytes (32 bytes each): vpmaddubsw of the pair
    is the dot product of w and s (|w| <= 128, |s| <= 127: a pair of products fits i16)."""
    sign = _declare(builder.module, "llvm.x86.avx2.psign.b", _V32I8, [_V32I8, _V32I8])
    absb = _declare(builder.module, "llvm.abs.v32i8", _V32I8, [_V32I8, ir.IntType(1)])
    w = builder.xor(u, ir.Constant(_V32I8, [0x80] * 32)) if biased else u
    return builder.call(absb, [w, ir.Constant(ir.IntType(1), 0)]), builder.call(sign, [s, w])


def dot4_256(builder, acc, u, s, wide=False):
    """dot4 on ymm values (8 i32 lanes, 32 bytes): vpdpbusd with AVX-VNNI (its VEX form where the CPU has no
    AVX-512VL: LLVM picks the encoding), else vpmaddubsw + vpmaddwd by ones (wide: signed_pair first, the result
    without 128 * sum(s), as WIDE_UNBIASED says)."""
    if CPU_PATH == "avxvnni":
        fn = _declare(builder.module, "llvm.x86.avx512.vpdpbusd.256", _V8I32, [_V8I32, _V32I8, _V32I8])
        return builder.call(fn, [acc, u, s])
    if wide:
        u, s = signed_pair(builder, u, s)
    return builder.add(acc, maddwd(builder, maddubs(builder, u, s), ir.Constant(_V16I16, [1] * 16)))


def _madd16_generic(builder, acc, a, c):
    n = acc.type.count
    pick = [builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), list(range(k, 2 * n, 2))))
            for v in (a, c) for k in (0, 1)]
    even, odd = (builder.mul(builder.sext(pick[k], acc.type), builder.sext(pick[k + 2], acc.type)) for k in (0, 1))
    return builder.add(acc, builder.add(even, odd))


def _madd16_avx512vnni(builder, acc, a, c):
    fn = _declare(builder.module, "llvm.x86.avx512.vpdpwssd.512", _V16I32, [_V16I32, _V32I16, _V32I16])
    return builder.call(fn, [acc, a, c])


def madd16(builder, acc, a, c):
    """acc (16 x i32) + in each lane the sum of the products of its two i16 pairs of a and c (32 x i16 each):
    vpdpwssd with AVX-512 VNNI, vpmaddwd's arithmetic elsewhere (LLVM's own choice of instructions)."""
    return PATH.madd16(builder, acc, a, c)


def _sign_dot32_x86(builder, g, m, x, ls16, unsigned_words):
    """llama.cpp's AVX2 step for the lattice types: the activations take the weights' signs (vpsignb by m | 1: +-1
    per byte), vpmaddubsw with the magnitudes, vpmaddwd by the scales of the two halves (unsigned words: no signs
    to take)."""
    if not unsigned_words:
        sign = _declare(builder.module, "llvm.x86.avx2.psign.b", _V32I8, [_V32I8, _V32I8])
        x = builder.call(sign, [x, builder.or_(m, ir.Constant(_V32I8, [1] * 32))])
    return maddwd(builder, maddubs(builder, g, x), ls16)


def _sign_dot32_neon(builder, g, m, x, ls16, unsigned_words):
    """The same with sdot: the activations negated where m is set ((x ^ m) - m) (unsigned words below 128 are the
    same bytes read as signed), times the magnitudes, each half's four lanes times its scale."""
    xs = x if unsigned_words else builder.sub(builder.xor(x, m), m)
    lanes = per_part(builder, 2, lambda a, gq, xq: _neon_dot(builder, "sdot", a, gq, xq), ir.Constant(_V8I32, None),
                     g, xs)
    halves_ls = builder.shuffle_vector(ls16, ls16, ir.Constant(_V8I32, [8 * (k // 4) for k in range(8)]))
    return builder.mul(lanes, builder.sext(halves_ls, _V8I32))


def sign_dot32(builder, g, m, x, ls16, unsigned_words=False):
    """8 x i32 lanes summing to ls_lo * (w . x over the first 16 bytes) + ls_hi * (the same over the last 16), for
    32 weights w given as magnitudes g (32 x i8, < 128) and sign masks m (0xFF: negative), or (unsigned_words) as
    bytes g < 128 with no signs (m unused), against activation codes x (32 x i8, -127..127); ls16 (16 x i16): ls_lo
    in lanes 0..7, ls_hi in 8..15 (vpmaddwd's operand: the scale of weights 2k, 2k + 1 in lane k). Exact (a
    vpmaddubsw pair: 2 * 127 * 127)."""
    return PATH.sign_dot32(builder, g, m, x, ls16, unsigned_words)


def _dot4_ymm_pairs(builder, acc, u, s, wide):
    zero = ir.Constant(_V8I32, None)
    return builder.add(acc, per_part(builder, 2, lambda uh, sh: dot4_256(builder, zero, uh, sh, wide), u, s))


def _neon_dot(builder, name, acc, u, s):
    fn = _declare(builder.module, f"llvm.aarch64.neon.{name}.v4i32.v16i8", _V4I32, [_V4I32, _V16I8, _V16I8])
    return builder.call(fn, [acc, u, s])


def _dot4_i8mm(builder, acc, u, s, wide):
    return per_part(builder, 4, lambda a, uq, sq: _neon_dot(builder, "usdot", a, uq, sq), acc, u, s)


def _dot4_dotprod(builder, acc, u, s, wide):
    if wide:
        u = builder.xor(u, ir.Constant(_V64I8, [0x80] * 64))
    return per_part(builder, 4, lambda a, uq, sq: _neon_dot(builder, "sdot", a, uq, sq), acc, u, s)


def dot4(builder, acc, u, s, wide=False):
    """acc (16 x i32) + the 4-byte dot products of u (64 x u8 codes) and s (64 x i8, -127..127) per lane. wide: u
    may exceed 128 (a signed value + 128); then on a WIDE_UNBIASED path the result leaves out 128 * sum(s)."""
    return PATH.dot4(builder, acc, u, s, wide)


@dataclass(frozen=True)
class KernelPath:
    """What the integer kernels need to know of a path.
    register_bits: its vector registers' width. dot4: its dot-product step (above). sign_dot32: the lattice types'
    step (32 weights as magnitudes and signs, two scales). wide_unbiased: dot4 of wide
    codes leaves out 128 * sum(s). registers_32: 32 registers of that width hold a 4 x 4 block of float dot
    products and their loads (AVX-512; not 16 ymm, and 32 NEON registers are a quarter as wide). ymm_steps: the
    decode steps written for 256-bit registers run (_avx2.py, _vnni16._block_dot16_256), where LLVM's split of the
    512-bit ones spilled; on AVX-VNNI they use vpdpbusd where it replaces a vpmaddubsw + vpmaddwd pair. madd16: the
    i16 pair step (below)."""
    register_bits: int
    dot4: Callable
    sign_dot32: Callable
    wide_unbiased: bool = False
    registers_32: bool = False
    ymm_steps: bool = False
    madd16: Callable = _madd16_generic


KERNEL_PATHS = {
    "avx512vnni": KernelPath(512, _dot4_avx512vnni, _sign_dot32_x86, registers_32=True, madd16=_madd16_avx512vnni),
    "avxvnni": KernelPath(256, _dot4_ymm_pairs, _sign_dot32_x86, ymm_steps=True),
    "avx2": KernelPath(256, _dot4_ymm_pairs, _sign_dot32_x86, wide_unbiased=True, ymm_steps=True),
    "i8mm": KernelPath(128, _dot4_i8mm, _sign_dot32_neon),
    "dotprod": KernelPath(128, _dot4_dotprod, _sign_dot32_neon, wide_unbiased=True),
    "float": None,          # no integer kernels: the float ones run
}
PATH = KERNEL_PATHS[CPU_PATH]
INT_KERNELS = PATH is not None
WIDE_UNBIASED = INT_KERNELS and PATH.wide_unbiased
YMM = INT_KERNELS and PATH.ymm_steps
REGISTERS_32 = INT_KERNELS and PATH.registers_32


# a 16-entry byte lookup per register width: vpshufb (zmm, ymm), tbl (AArch64, the same 16 bytes per register)
_LOOKUP16 = {512: "llvm.x86.avx512.pshuf.b.512", 256: "llvm.x86.avx2.pshuf.b", 128: "llvm.aarch64.neon.tbl1.v16i8"}


def lookup16(builder, table, idx):
    """Each byte of idx (0..15) replaced by that entry of its 16-byte lane of table (64 x i8 both)."""
    bits = PATH.register_bits
    vt = ir.VectorType(_I8, bits // 8)
    fn = _declare(builder.module, _LOOKUP16[bits], vt, [vt, vt])
    return per_part(builder, 512 // bits, lambda t, i: builder.call(fn, [t, i]), table, idx)
