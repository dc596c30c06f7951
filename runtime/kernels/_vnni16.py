"""Decode intrinsics for ROWS16 layouts: the 16 int32 lanes of a vpdpbusd are 16 weight rows.

A row kernel (_vnni.py) puts 64 codes of one row in a vector, so every 32-block costs a scale shuffle and every row a
horizontal sum at its end: on SmolLM2's 576-wide rows that overhead, not memory, bounded the 4-bit types (Q4_0 and
IQ4_NL at 13-25 GB/s in cache against Q8_0's 33-50). Here one vector holds 4 codes of each of 16 rows (as llama.cpp's
repacked q4_0_8x8 / iq4_nl_4x4 GEMVs and _gemm.py's prefill tiles): a 32-block of 16 rows is 8 vpdpbusd against
32-bit broadcasts of 4 activation codes, one conversion and one multiply-add by the 16 rows' scales, no horizontal
sum; the 16 results are one masked store.

Here: the 32-block types and IQ4_XS, IQ3_S, IQ3_XXS (blocks16.py: NIB16, 256 bytes per 16 rows and 32-block,
chunk c, row r, byte t at 64 c + 4 r + t holding element 4 c + t in its low nibble and 16 + 4 c + t in its high
one, the file's byte; Q5's 5th bits as 64-bit masks; Q8_0 as I8_16, 512 bytes of codes + 128), Q4_K and Q6_K
(kquants_rows16.py, kquants_q6k16.py: one record per 16 rows and super-block, codes, scales and d together), and
the tile decoders the prefill GEMM reads them with.
"""
import numba
import numpy as np
from gguf.quants import IQ4_NL
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from kvant.formats.codecs_iq import GRID_IQ3_S, GRID_IQ3_XXS

from ._isa import (_V32I16, CPU_PATH, WIDE_UNBIASED, YMM, dot4, dot4_256, halves, join, lookup16, madd16, maddubs,
                   maddwd, signed_pair)
from ._vnni import (_F32, _I8, _I16, _I32, _I64, _V16F, _V16I32, _V64I8, _as_i64, _c64, _data, _declare, _is_arr,
                    _k_row_args, _sb_loop, _splat, _vec_load, ir_loop)

_V16I8 = ir.VectorType(_I8, 16)
_V16I16 = ir.VectorType(_I16, 16)
_V16H = ir.VectorType(ir.HalfType(), 16)
_V16I1 = ir.VectorType(ir.IntType(1), 16)
_V8I32 = ir.VectorType(_I32, 8)
_INTERLEAVE16 = ir.Constant(ir.VectorType(_I32, 32), [16 * (k & 1) + (k >> 1) for k in range(32)])


def _signed_grid(grid):
    """The 16 values of a lattice grid's 8 magnitudes with either sign, ascending."""
    mags = [int(v) for v in np.unique(grid)]
    return tuple([-v for v in reversed(mags)] + mags)


IQ4 = tuple(int(v) for v in IQ4_NL.kvalues)
# What a NIB16 code can stand for, by number: 0 the code itself; else 16 values looked up by vpshufb and the factor
# the super-block's d carries. IQ4_NL's codebook; the IQ3 lattice types' weights (a grid value and a sign:
# IQ3_S +-1..15 odd, d the file's; IQ3_XXS +-4..62, d / 4), which iquants.py repacks to such codes. The xs16 kernels
# take the number from the dtype of an empty tag array (BOOK_TAGS), so that each compiles with its table.
CODEBOOKS = (None, (IQ4, 1.0), (_signed_grid(GRID_IQ3_S), 1.0), (_signed_grid(GRID_IQ3_XXS), 0.25))
BOOK_TAGS = {1: np.int8, 2: np.int16, 3: np.int32}
BOOK_OF_TAG = {str(numba.from_dtype(np.dtype(t))): k for k, t in BOOK_TAGS.items()}


def x_quad(builder, xq_p, offset, lanes=16):
    """The 4 activation codes at xq_p[offset] broadcast to all lanes (16: a 512-bit value, 8: a ymm)."""
    quad = builder.load(builder.bitcast(builder.gep(xq_p, [offset]), _I32.as_pointer()), align=1)
    return builder.bitcast(_splat(builder, quad, ir.VectorType(_I32, lanes)), ir.VectorType(_I8, 4 * lanes))


def lanes_f32(builder, ptr, offset, is_f32):
    """16 scales at ptr[offset] as floats: f32, or u16 holding fp16 (vcvtph2ps)."""
    if is_f32:
        return _vec_load(builder, ptr, offset, _V16F)
    return builder.fpext(builder.bitcast(_vec_load(builder, ptr, offset, _V16I16), _V16H), _V16F)


def store_rows(builder, acc, out_p, r0, nr):
    """out[r0 + r] = acc[r] for r < nr."""
    mstore = _declare(builder.module, "llvm.masked.store.v16f32.p0", ir.VoidType(),
                      [_V16F, _V16F.as_pointer(), _I32, _V16I1])
    bits = builder.sub(builder.shl(_c64(1), nr), _c64(1))
    mask = builder.bitcast(builder.trunc(bits, _I16), _V16I1)
    dst = builder.bitcast(builder.gep(out_p, [r0]), _V16F.as_pointer())
    builder.call(mstore, [acc, dst, ir.Constant(_I32, 4), mask])


def _run_and_store(context, builder, n, body, out_p, r0, nr):
    """for i in range(n): acc = body(builder, i, acc, _) (a 16-float accumulator from zero), then out[r0 + r] =
    acc[r] for r < nr."""
    acc, _ = _sb_loop(builder, n, body, _I32)
    store_rows(builder, acc, out_p, r0, nr)
    return context.get_dummy_value()


def _codebook_table(values, bias=128):
    """A codebook's 16 values + bias as vpshufb's table, repeated for each 128-bit lane."""
    return ir.Constant(_V64I8, [(int(v) + bias) & 0xFF for v in values] * 4)


def iq4_plus_128(builder, codes, bias=128, values=IQ4):
    """4-bit codes -> their codebook values (IQ4_NL's, or values) + 128 (or + bias), as bytes (vpshufb, 16 values
    per 128-bit lane)."""
    return lookup16(builder, _codebook_table(values, bias), codes)


def _fifth_bits(b, h_p, offset):
    """16 in each byte whose bit is set in the 64-bit mask at h_p[offset], else 0 (a masked byte move)."""
    mask = b.load(b.bitcast(b.gep(h_p, [offset]), _I64.as_pointer()), align=1)
    return b.select(b.bitcast(mask, ir.VectorType(ir.IntType(1), 64)), ir.Constant(_V64I8, [16] * 64),
                    ir.Constant(_V64I8, None))


def _block_codes16(b, q_p, qo, c, iq4, h_p=None, ho=None, iq4_bias=128):
    """Chunk c of one NIB16 32-block of 16 rows (256 bytes at q_p[qo]) as two vectors of unsigned codes: the low
    nibbles (elements 4c..4c+3 of each row) and the high ones (16 + 4c..); iq4 (a codebook's values, or None): the
    value + 128 (+ iq4_bias);
    with h_p, the 5th bits from the block's 8 masks at h_p[ho] (mask 2c + half, bit 4 r + t)."""
    packed = _vec_load(b, q_p, b.add(qo, _c64(64 * c)), _V64I8)
    lo, hi = b.and_(packed, ir.Constant(_V64I8, [15] * 64)), b.lshr(packed, ir.Constant(_V64I8, [4] * 64))
    if iq4:
        lo, hi = iq4_plus_128(b, lo, iq4_bias, iq4), iq4_plus_128(b, hi, iq4_bias, iq4)
    if h_p is not None:
        lo = b.or_(lo, _fifth_bits(b, h_p, b.add(ho, _c64(16 * c))))
        hi = b.or_(hi, _fifth_bits(b, h_p, b.add(ho, _c64(16 * c + 8))))
    return lo, hi


def _chunk_codes(b, q_p, qo, xo, c, iq4, h_p, ho, i8, iq4_bias=128):
    """Chunk c of a 32-block of 16 rows: two vectors of 4 codes of each row and the offsets of their 4 activation
    codes. NIB16 (256 bytes at q_p[qo]): low and high nibbles, _block_codes16's codes; i8: I8_16 (512 bytes, chunk
    k, row r, byte t at 64 k + 4 r + t = element 4 k + t as an unsigned byte)."""
    if i8:
        pair = [_vec_load(b, q_p, b.add(qo, _c64(64 * k)), _V64I8) for k in (2 * c, 2 * c + 1)]
        return pair, (b.add(xo, _c64(8 * c)), b.add(xo, _c64(8 * c + 4)))
    return (_block_codes16(b, q_p, qo, c, iq4, h_p, ho, iq4_bias),
            (b.add(xo, _c64(4 * c)), b.add(xo, _c64(4 * c + 16))))


def _block_dot16_512(b, q_p, qo, xq_p, xo, iq4, h_p, ho, i8):
    """8 dot4 (vpdpbusd with AVX-512 VNNI) in two chains."""
    chains = [ir.Constant(_V16I32, None)] * 2
    for c in range(4):
        pair, quads = _chunk_codes(b, q_p, qo, xo, c, iq4, h_p, ho, i8)
        chains = [dot4(b, chains[j], pair[j], x_quad(b, xq_p, quads[j]), iq4 or i8) for j in range(2)]
    return b.add(chains[0], chains[1])


def _block_dot16_256(b, q_p, qo, xq_p, xo, iq4, h_p, ho, i8):
    """On ymm values, 8 rows each, both halves of a chunk against the same two 8-lane broadcasts (_avx2.py says
    why). AVX-VNNI: a vpdpbusd per ymm. AVX2: vpmaddubsw products add up in i16 while they cannot overflow: codes
    0..15 against |x| <= 127, 8 of them (16 products a lane); 5-bit codes 4; the wide codes (signed values,
    _isa.signed_pair) 1. Then vpmaddwd by ones."""
    wide = iq4 or i8
    per_sum = 1 if wide else (4 if h_p is not None else 8)
    ones = ir.Constant(_V16I16, [1] * 16)
    dots, pending = [ir.Constant(_V8I32, None)] * 2, [None, None]
    for c in range(4):
        # AVX2 looks the IQ4 codebook up as signed values: signed_pair then needs no bias taken out
        pair, quads = _chunk_codes(b, q_p, qo, xo, c, iq4, h_p, ho, i8, iq4_bias=0 if WIDE_UNBIASED else 128)
        for j in range(2):
            x = x_quad(b, xq_p, quads[j], 8)
            for half, u in enumerate(halves(b, pair[j])):
                if CPU_PATH == "avxvnni":
                    dots[half] = dot4_256(b, dots[half], u, x)
                    continue
                u, s = signed_pair(b, u, x, biased=i8) if wide else (u, x)
                part = maddubs(b, u, s)
                pending[half] = part if pending[half] is None else b.add(pending[half], part)
                if (2 * c + j + 1) % per_sum == 0:
                    dots[half] = b.add(dots[half], maddwd(b, pending[half], ones))
                    pending[half] = None
    return join(b, *dots)


def for_blocks(builder, n, step, state):
    """state = step(builder, k, state) for k in range(n): unrolled (k a constant) where the vector registers are
    512-bit, an IR loop on AVX2, where LLVM otherwise hoists the loads of the whole unrolled run and spills them."""
    if YMM:
        return ir_loop(builder, n, lambda b, k, states: [step(b, k, states[0])], [state])[0]
    for k in range(n):
        state = step(builder, _c64(k), state)
    return state


def _block_dot16(b, q_p, qo, xq_p, xo, iq4, h_p=None, ho=None, i8=False):
    """The int32 dot products of one 32-block of 16 rows with the 32 activation codes at xq_p[xo] (codes: see
    _chunk_codes), written per kernel path."""
    step = _block_dot16_256 if YMM else _block_dot16_512
    return step(b, q_p, qo, xq_p, xo, iq4, h_p, ho, i8)


def _nib16_codegen(iq4, with_min, with_qh=False, i8=False):
    """out[r0 + r] (r < nr) = sum over 32-blocks b of fp16 d[b, r] xd[b] (xo[b] + codes . xq) (+ m[b, r] xm[b]):
    q (nb, 256) NIB16 bytes of 16 rows, codes as unsigned bytes (iq4: codebook value + 128; with_qh: 5-bit codes,
    the 5th bits in h (nb, 64), the argument after q; i8: q (nb, 512) I8_16 bytes); d, m (nb, 16) fp16 bits or
    f32; xq int8 codes (element order), xd f32 per block, xo int32 per block (-offset * code sum), xm f32."""
    def codegen(context, builder, signature, args):
        sig = signature.args
        q_p = _data(context, builder, sig[0], args[0], _I8)
        h_p = _data(context, builder, sig[1], args[1], _I8) if with_qh else None
        k = 2 if with_qh else 1
        d_f32 = sig[k].dtype == types.float32
        d_p, m_p = (_data(context, builder, sig[j], args[j], _F32 if d_f32 else _I16) for j in (k, k + 1))
        xq_p = _data(context, builder, sig[k + 2], args[k + 2], _I8)
        xd_p = _data(context, builder, sig[k + 3], args[k + 3], _F32)
        xo_p = _data(context, builder, sig[k + 4], args[k + 4], _I32)
        xm_p = _data(context, builder, sig[k + 5], args[k + 5], _F32)
        n = _as_i64(builder, args[k + 6])
        out_p = _data(context, builder, sig[k + 7], args[k + 7], _F32)
        r0, nr = _as_i64(builder, args[k + 8]), _as_i64(builder, args[k + 9])

        def body(b, i, acc, _):
            dot = _block_dot16(b, q_p, b.mul(i, _c64(512 if i8 else 256)), xq_p, b.mul(i, _c64(32)), iq4, h_p,
                               b.mul(i, _c64(64)) if with_qh else None, i8)
            if not ((iq4 or i8) and WIDE_UNBIASED):      # the offset is out already (_isa)
                dot = b.add(dot, _splat(b, b.load(b.gep(xo_p, [i])), _V16I32))
            scale = b.fmul(lanes_f32(b, d_p, b.mul(i, _c64(16)), d_f32), _splat(b, b.load(b.gep(xd_p, [i])), _V16F))
            acc = b.fadd(acc, b.fmul(b.sitofp(dot, _V16F), scale, flags=("contract",)), flags=("contract",))
            if with_min:
                mins = lanes_f32(b, m_p, b.mul(i, _c64(16)), d_f32)
                acc = b.fadd(acc, b.fmul(mins, _splat(b, b.load(b.gep(xm_p, [i])), _V16F), flags=("contract",)),
                             flags=("contract",))
            return acc, _

        return _run_and_store(context, builder, n, body, out_p, r0, nr)
    return codegen


def _nib16_signature(q, d, m, xq, xd, xo, xm, nb, out, r0, nr, h=None):
    ok = (_is_arr(q, types.uint8) and q.layout == "C" and _is_arr(d, types.uint16, types.float32) and m == d
          and d.layout == "C" and _is_arr(xq, types.int8) and _is_arr(xd, types.float32)
          and _is_arr(xo, types.int32) and _is_arr(xm, types.float32) and _is_arr(out, types.float32)
          and all(isinstance(t, types.Integer) for t in (nb, r0, nr))
          and (h is None or (_is_arr(h, types.uint8) and h.layout == "C")))
    if not ok:
        return None
    head = (q,) if h is None else (q, h)
    return types.void(*head, d, m, xq, xd, xo, xm, nb, out, r0, nr)


@intrinsic
def nib16_dot(typingctx, q, d, m, xq, xd, xo, xm, nb, out, r0, nr):
    """16 NIB16 rows (codes 0..15) times int8 activations: see _nib16_codegen (m, xm unused)."""
    sig = _nib16_signature(q, d, m, xq, xd, xo, xm, nb, out, r0, nr)
    return (sig, _nib16_codegen(False, False)) if sig is not None else None


@intrinsic
def nib16_min_dot(typingctx, q, d, m, xq, xd, xo, xm, nb, out, r0, nr):
    """nib16_dot plus m[b, r] * xm[b] per block (Q4_1's min times Q8_1's block sum)."""
    sig = _nib16_signature(q, d, m, xq, xd, xo, xm, nb, out, r0, nr)
    return (sig, _nib16_codegen(False, True)) if sig is not None else None


@intrinsic
def iq4_16_dot(typingctx, q, d, m, xq, xd, xo, xm, nb, out, r0, nr):
    """nib16_dot with each code looked up in the IQ4 codebook (+ 128: xo must hold -128 * code sum)."""
    sig = _nib16_signature(q, d, m, xq, xd, xo, xm, nb, out, r0, nr)
    return (sig, _nib16_codegen(IQ4, False)) if sig is not None else None


@intrinsic
def i8_16_dot(typingctx, q, d, m, xq, xd, xo, xm, nb, out, r0, nr):
    """nib16_dot for I8_16 rows (Q8_0: q (nb, 512), codes + 128 as unsigned bytes; xo = -128 * code sum)."""
    sig = _nib16_signature(q, d, m, xq, xd, xo, xm, nb, out, r0, nr)
    return (sig, _nib16_codegen(False, False, False, True)) if sig is not None else None


@intrinsic
def nib16h_dot(typingctx, q, h, d, m, xq, xd, xo, xm, nb, out, r0, nr):
    """nib16_dot for 5-bit codes (Q5_0): the 5th bits from h (nb, 64), 8 masks a block (see _block_codes16)."""
    sig = _nib16_signature(q, d, m, xq, xd, xo, xm, nb, out, r0, nr, h)
    return (sig, _nib16_codegen(False, False, True)) if sig is not None else None


@intrinsic
def nib16h_min_dot(typingctx, q, h, d, m, xq, xd, xo, xm, nb, out, r0, nr):
    """nib16h_dot plus m[b, r] * xm[b] per block (Q5_1)."""
    sig = _nib16_signature(q, d, m, xq, xd, xo, xm, nb, out, r0, nr, h)
    return (sig, _nib16_codegen(False, True, True)) if sig is not None else None


def _tile16_codegen(with_qh):
    def codegen(context, builder, signature, args):
        sig = signature.args
        wt_p = _data(context, builder, sig[0], args[0], _I8)
        q_p = _data(context, builder, sig[1], args[1], _I8)
        h_p = _data(context, builder, sig[2], args[2], _I8) if with_qh else None
        k = 3 if with_qh else 2
        n, book = _as_i64(builder, args[k]), _as_i64(builder, args[k + 1])
        # the book's table chosen once per call (the codes themselves where book is 0): one lookup per vector
        table = _codebook_table(CODEBOOKS[1][0])
        for number in range(2, len(CODEBOOKS)):
            table = builder.select(builder.icmp_signed("==", book, _c64(number)),
                                   _codebook_table(CODEBOOKS[number][0]), table)
        use_table = builder.icmp_signed("!=", book, _c64(0))

        def body(b, i, acc, _):
            for c in range(4):
                codes = _block_codes16(b, q_p, b.mul(i, _c64(256)), c, False, h_p,
                                       b.mul(i, _c64(64)) if with_qh else None)
                for half in range(2):
                    v = codes[half] if with_qh else b.select(use_table, lookup16(b, table, codes[half]), codes[half])
                    dst = b.add(b.mul(i, _c64(512)), _c64(256 * half + 64 * c))
                    b.store(v, b.bitcast(b.gep(wt_p, [dst]), _V64I8.as_pointer()), align=1)
            return acc, _

        _sb_loop(builder, n, body, _I32)
        return context.get_dummy_value()
    return codegen


def _tile16_signature(wt, q, h, nb, flag):
    ok = (_is_arr(wt, types.uint8) and wt.layout == "C" and all(_is_arr(a, types.uint8) and a.layout == "C"
                                                                 for a in (q, h))
          and isinstance(nb, types.Integer) and isinstance(flag, types.Integer))
    return ok


@intrinsic
def nib16_tile(typingctx, wt, q, nb, book):
    """wt (nb * 512 u8, _gemm.py's TILE order) from one group's NIB16 bytes q (nb, 256): the codes (book 0), or
    the values + 128 of CODEBOOKS[book]."""
    return (types.void(wt, q, nb, book), _tile16_codegen(False)) if _tile16_signature(wt, q, q, nb, book) else None


@intrinsic
def nib16h_tile(typingctx, wt, q, h, nb, unused):
    """The same for 5-bit codes, their 5th bits from h (nb, 64) (see _block_codes16)."""
    return (types.void(wt, q, h, nb, unused), _tile16_codegen(True)) if _tile16_signature(wt, q, h, nb, unused) \
        else None


def _rows16_args(context, builder, signature, args, n_planes, n_scales):
    """The arguments of a super-block ROWS16 intrinsic as pointers, in their fixed order: n_planes byte planes,
    n_scales fp16 planes, xq, xd, bs, the super-block count, out, r0, nr (as _vnni._k_row_args, plus the last three).
    Returns (planes, scales, xq, xd, bs, n, out, r0, nr)."""
    planes, scales, _, xq_p, xd_p, bs_p, n = _k_row_args(context, builder, signature, args, n_planes, n_scales)
    k = n_planes + n_scales + 4
    out_p = _data(context, builder, signature.args[k], args[k], _F32)
    return planes, scales, xq_p, xd_p, bs_p, n, out_p, _as_i64(builder, args[k + 1]), _as_i64(builder, args[k + 2])


def _xs16_codegen(context, builder, signature, args):
    """IQ4_XS (and the IQ3 types repacked to it), 16 rows: q (nsb, 2048) NIB16 bytes (8 blocks of 256), sc (nsb,
    128) int8 block scales at 16 b + r (IQ4_XS: ls - 32; IQ3: 2 s + 1), d (nsb, 16) fp16 bits; xq Q8_K codes
    (element order), xd per 32 (the per-256 scale repeated), bs int32 code sums per 32; the codebook by the tag's
    dtype (CODEBOOKS). As llama.cpp's iq4_xs dot: per super-block d d_x sum_b sc_b (q_b . x_b), the sum exact."""
    (q_p, sc_p), (d_p,), xq_p, xd_p, bs_p, n, out_p, r0, nr = _rows16_args(context, builder, signature, args, 2, 1)
    values, factor = CODEBOOKS[BOOK_OF_TAG[str(signature.args[-1].dtype)]]
    v16i8 = ir.VectorType(_I8, 16)

    def block(b, blk, sumi, s):
        k = b.add(b.mul(s, _c64(8)), blk)
        dot = _block_dot16(b, q_p, b.mul(k, _c64(256)), xq_p, b.mul(k, _c64(32)), values)
        if not WIDE_UNBIASED:       # codebook value + 128: take out 128 * the code sum (_isa)
            offset = b.mul(b.load(b.gep(bs_p, [k])), ir.Constant(_I32, -128))
            dot = b.add(dot, _splat(b, offset, _V16I32))
        scales = b.sext(_vec_load(b, sc_p, b.mul(k, _c64(16)), v16i8), _V16I32)
        return b.add(sumi, b.mul(dot, scales))

    def body(b, s, acc, _):
        sumi = for_blocks(b, 8, lambda b, blk, sumi: block(b, blk, sumi, s), ir.Constant(_V16I32, None))
        scale = b.fmul(lanes_f32(b, d_p, b.mul(s, _c64(16)), False),
                       _splat(b, b.load(b.gep(xd_p, [b.mul(s, _c64(8))])), _V16F))
        if factor != 1.0:
            scale = b.fmul(scale, ir.Constant(_V16F, [factor] * 16))
        acc = b.fadd(acc, b.fmul(b.sitofp(sumi, _V16F), scale, flags=("contract",)), flags=("contract",))
        return acc, _

    return _run_and_store(context, builder, n, body, out_p, r0, nr)


@intrinsic
def xs16_dot(typingctx, q, sc, d, xq, xd, bs, nsb, out, r0, nr, book):
    """out[r0 + r] for r < nr (<= 16): 16 rows of IQ4_XS's layout in NIB16 order times Q8_K activations, the
    codes standing for the values of the codebook whose tag book is (an empty array, BOOK_TAGS; see
    _xs16_codegen)."""
    ok = (_is_arr(q, types.uint8) and _is_arr(sc, types.int8) and _is_arr(d, types.uint16)
          and all(t.layout == "C" for t in (q, sc, d)) and _is_arr(xq, types.int8) and _is_arr(xd, types.float32)
          and _is_arr(bs, types.int32) and _is_arr(out, types.float32)
          and all(isinstance(t, types.Integer) for t in (nsb, r0, nr))
          and isinstance(book, types.Array) and str(book.dtype) in BOOK_OF_TAG)
    return (types.void(q, sc, d, xq, xd, bs, nsb, out, r0, nr, book), _xs16_codegen) if ok else None


# ---------------------------------------------------------------- K-quant records (kquants_rows16.py, kquants_q6k16.py)
# One record per 16 rows and super-block, read as one stream (bytes; both whole cache lines)
Q4K_RECORD, Q4K_SM, Q4K_D, Q4K_DM, Q4K_CODES = 2304, 0, 192, 224, 256
Q6K_RECORD, Q6K_QUAD, Q6K_SCALES, Q6K_D = 3392, 832, 768, 3328


def _record_signature(w, xq, xd, bs, nsb, out, r0, nr):
    """void(w (nsb, record bytes) u8 C, xq i8, xd f32, bs i32, nsb, out f32, r0, nr), or None."""
    ok = (_is_arr(w, types.uint8) and w.layout == "C" and w.ndim == 2
          and _is_arr(xq, types.int8) and _is_arr(xd, types.float32) and _is_arr(bs, types.int32)
          and _is_arr(out, types.float32) and all(isinstance(t, types.Integer) for t in (nsb, r0, nr)))
    return types.void(w, xq, xd, bs, nsb, out, r0, nr) if ok else None


# ---------------------------------------------------------------- Q4_K (kquants_rows16.py)
# The row kernel (_vnni._q5k_codegen without qh) spent ~40 instructions per 256 weights on per-block scale shuffles,
# vpmulld and the row's final sum; here a block's scales are one vpmulld for 16 rows: one core, in cache, 104 G
# weights/s against 41.


def _q4k_rows16_codegen(context, builder, signature, args):
    """16 rows' Q4_K super-blocks in ROWS16 order (kquants_rows16.py): w (nsb, 2304) one record per super-block s:
    bytes 0-191 the scales and mins (block b, row r: byte 16 b + r = scale | (min >> 4) << 6, the min's low 4 bits
    in byte 128 + 16 (b & 3) + r, nibble b >> 2), 192-255 the 16 rows' fp16 d, then dmin, 256-2303 the codes (block
    b, chunk c, row r, byte t at 256 + 256 b + 64 c + 4 r + t: low nibble element 32 b + 4 c + t, high nibble element
    32 b + 16 + 4 c + t).
    out[r0 + r] = the row's dot product with the Q8_K codes xq (element order), xd per 32, bs exact per-32 code
    sums, for r < nr (masked store)."""
    (w_p,), _, xq_p, xd_p, bs_p, n, out_p, r0, nr = _rows16_args(context, builder, signature, args, 1, 0)
    half_p = builder.bitcast(w_p, _I16.as_pointer())

    def const16(v):
        return ir.Constant(_V16I8, [v] * 16)

    def body(b, s, acc, _):
        sumi = summ = ir.Constant(_V16I32, None)
        qo, xo = b.mul(s, _c64(Q4K_RECORD)), b.mul(s, _c64(256))
        so = b.add(qo, _c64(Q4K_SM))
        mins = []
        for blk in range(8):
            dot = _block_dot16(b, w_p, b.add(qo, _c64(Q4K_CODES + 256 * blk)), xq_p, b.add(xo, _c64(32 * blk)), False)
            packed_sm = _vec_load(b, w_p, b.add(so, _c64(16 * blk)), _V16I8)
            scales = b.zext(b.and_(packed_sm, const16(63)), _V16I32)
            sumi = b.add(sumi, b.mul(dot, scales))
            low = _vec_load(b, w_p, b.add(so, _c64(128 + 16 * (blk & 3))), _V16I8)
            low = b.and_(b.lshr(low, const16(4 * (blk >> 2))), const16(15))
            high = b.lshr(b.and_(packed_sm, const16(0xC0)), const16(2))
            mins.append(b.or_(low, high))
        # the mins' sum over blocks pairs by pairs (block 2k, 2k + 1 as the i16 pair of each row's lane): 4 madd16
        # where 8 32-bit multiplies were (vpmulld is two uops on the port vpdpbusd needs)
        for pair in range(4):
            row_pairs = b.zext(b.shuffle_vector(mins[2 * pair], mins[2 * pair + 1], _INTERLEAVE16), _V32I16)
            sums = _vec_load(b, bs_p, b.add(b.mul(s, _c64(8)), _c64(2 * pair)), ir.VectorType(_I32, 2))
            sums = b.bitcast(b.trunc(sums, ir.VectorType(_I16, 2)), _I32)       # |code sum| <= 32 * 127
            summ = madd16(b, summ, row_pairs, b.bitcast(_splat(b, sums, _V16I32), _V32I16))
        xd = _splat(b, b.load(b.gep(xd_p, [b.mul(s, _c64(8))])), _V16F)
        halves = b.mul(s, _c64(Q4K_RECORD // 2))      # the record in fp16 units
        d, dm = (b.fmul(lanes_f32(b, half_p, b.add(halves, _c64(k // 2)), False), xd) for k in (Q4K_D, Q4K_DM))
        acc = b.fadd(acc, b.fmul(b.sitofp(sumi, _V16F), d, flags=("contract",)), flags=("contract",))
        acc = b.fsub(acc, b.fmul(b.sitofp(summ, _V16F), dm, flags=("contract",)), flags=("contract",))
        return acc, _

    return _run_and_store(context, builder, n, body, out_p, r0, nr)


@intrinsic
def q4k_rows16_dot(typingctx, w, xq, xd, bs, nsb, out, r0, nr):
    """out[r0 + r] for r < nr (<= 16): 16 Q4_K rows in ROWS16 records (see _q4k_rows16_codegen) times Q8_K
    activations, llama.cpp's sums (per super-block d_x (d sum_b sc_b q_b . x_b - dmin sum_b mn_b bs_b), the
    integer sums exact)."""
    sig = _record_signature(w, xq, xd, bs, nsb, out, r0, nr)
    return (sig, _q4k_rows16_codegen) if sig is not None else None


# ---------------------------------------------------------------- Q6_K (kquants_q6k16.py)
# The row kernel this replaced spent a vpmulld and a scale shuffle on every 64 codes (its 16 lanes spanned four
# 16-element groups, each with its own scale) and a horizontal sum per row: 28 GB/s a core in cache, below the read
# bandwidth of two. Here a vector holds 4 codes of each of 16 rows of one 16-element group: a group is 4 vpdpbusd
# and one vpmulld by the 16 rows' scales.

def _q6k_rows16_codegen(context, builder, signature, args):
    """16 rows' Q6_K super-blocks as kquants_q6k16.py records: w (nsb, 3392), per super-block s at 3392 s, groups
    4q .. 4q+3 at 832 q: crumb vectors of chunk c at 64 c (crumb u of byte 4 r + t: the high 2 bits of row r's
    element 4 c + t of group 4q + u), nibble vectors of pair p at 256 + 256 p + 64 c (low nibble: the low 4 bits of
    group 4q + 2p, high nibble: of group 4q + 2p + 1), the int8 scales at 768 + 16 u + r; fp16 d at 3328 + 2 r; all
    read in address order. xq Q8_K codes (element order), xd per 32, bs exact code sums per 16. As llama.cpp: per
    super-block d d_x sum_G sc_G (q_G - 32) . x_G, the integer sum exact."""
    (w_p,), _, xq_p, xd_p, bs_p, n, out_p, r0, nr = _rows16_args(context, builder, signature, args, 1, 0)
    half_p = builder.bitcast(w_p, _I16.as_pointer())

    def const64(v):
        return ir.Constant(_V64I8, [v] * 64)

    def high_bits(b, crumbs, u):
        """Crumb u of each byte moved to bits 4-5."""
        moved = b.shl(crumbs, const64(4 - 2 * u)) if u < 2 else (crumbs if u == 2 else b.lshr(crumbs, const64(2)))
        return b.and_(moved, const64(0x30))

    def body(b, s, acc, _):
        sumi = ir.Constant(_V16I32, None)
        base = b.mul(s, _c64(Q6K_RECORD))
        for q in range(4):
            at = b.add(base, _c64(Q6K_QUAD * q))
            crumbs = [_vec_load(b, w_p, b.add(at, _c64(64 * c)), _V64I8) for c in range(4)]
            for p in range(2):
                nibbles = [_vec_load(b, w_p, b.add(at, _c64(256 + 256 * p + 64 * c)), _V64I8) for c in range(4)]
                for half in range(2):
                    g, u = 4 * q + 2 * p + half, 2 * p + half
                    dot = ir.Constant(_V16I32, None)
                    for c in range(4):
                        low = b.and_(nibbles[c], const64(15)) if half == 0 else b.lshr(nibbles[c], const64(4))
                        codes = b.or_(low, high_bits(b, crumbs[c], u))
                        quad = b.add(b.mul(s, _c64(256)), _c64(16 * g + 4 * c))
                        dot = dot4(b, dot, codes, x_quad(b, xq_p, quad))
                    bsum = b.load(b.gep(bs_p, [b.add(b.mul(s, _c64(16)), _c64(g))]))
                    dot = b.sub(dot, _splat(b, b.shl(bsum, ir.Constant(_I32, 5)), _V16I32))
                    scales = b.sext(_vec_load(b, w_p, b.add(at, _c64(Q6K_SCALES + 16 * u)), _V16I8), _V16I32)
                    sumi = b.add(sumi, b.mul(dot, scales))
        xd = _splat(b, b.load(b.gep(xd_p, [b.mul(s, _c64(8))])), _V16F)
        d = b.fmul(lanes_f32(b, half_p, b.add(b.mul(s, _c64(Q6K_RECORD // 2)), _c64(Q6K_D // 2)), False), xd)
        acc = b.fadd(acc, b.fmul(b.sitofp(sumi, _V16F), d, flags=("contract",)), flags=("contract",))
        return acc, _

    return _run_and_store(context, builder, n, body, out_p, r0, nr)


@intrinsic
def q6k_rows16_dot(typingctx, w, xq, xd, bs, nsb, out, r0, nr):
    """out[r0 + r] for r < nr (<= 16): 16 Q6_K rows in kquants_q6k16.py records times Q8_K activations (see
    _q6k_rows16_codegen)."""
    sig = _record_signature(w, xq, xd, bs, nsb, out, r0, nr)
    return (sig, _q6k_rows16_codegen) if sig is not None else None
