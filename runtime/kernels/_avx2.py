"""Decode steps written for 256-bit registers (the avx2 and avxvnni paths: _isa.YMM): ROWS16 records read as two
8-row halves. They use AVX2 instructions only, which AVX-VNNI CPUs have too.

_vnni16.py writes its steps on 512-bit values, which LLVM splits into ymm pairs on AVX2. For Q4_K that split came
out badly: LLVM computed every block's first half, then every second half, and kept the 4-code activation broadcasts
of the first for the second, spilling about 30 of them to the stack per block (the 1.1B model's decode step at 66%
of a streaming read of its bytes). Here a step is written on ymm values, 8 rows a vector, both halves of a chunk
done together against the same two broadcasts.

And AVX2 has no vpdpbusd: its dot product is vpmaddubsw (pairs of u8 x i8 products into i16) then vpmaddwd (pairs
of those into i32). With 4-bit codes (0..15) and Q8_K codes (|x| <= 127) a pair is at most 3810, so the 8 vpmaddubsw
of one 32-block (16 products per i16 lane) add up in i16 without overflow (<= 30480), and one vpmaddwd by the block
scales (each row's scale in both i16 of its lane) turns them into scale * the block's dot product: per 32-block and
8 rows, 8 vpmaddubsw + 7 vpaddw + 1 vpmaddwd where the split 512-bit step took 8 + 8 vpmaddwd + 8 vpaddd + vpmulld,
as ggml's AVX2 q4_K dot product does (its vpmaddwd by the scales).
"""
from llvmlite import ir
from numba.extending import intrinsic

from ._isa import halves, join, maddubs, maddwd
from ._vnni import _I8, _I16, _I32, _V16F, _c64, _splat, _vec_load, ir_loop
from ._vnni16 import (Q4K_CODES, Q4K_D, Q4K_DM, Q4K_RECORD, Q4K_SM, Q6K_D, Q6K_QUAD, Q6K_RECORD, Q6K_SCALES,
                      _record_signature, _rows16_args, _run_and_store, lanes_f32, x_quad)

_V16I8, _V32I8 = ir.VectorType(_I8, 16), ir.VectorType(_I8, 32)
_V16I16, _V8I32 = ir.VectorType(_I16, 16), ir.VectorType(_I32, 8)


def _const(vtype, value):
    return ir.Constant(vtype, [value] * vtype.count)


def _row_pairs(b, bytes16, half, signed=False):
    """Rows 8 half .. 8 half + 7 of 16 bytes (unsigned, or signed) as i16 pairs (v, v) per i32 lane: vpmaddwd's
    factor."""
    picks = ir.Constant(ir.VectorType(_I32, 16), [8 * half + k // 2 for k in range(16)])
    doubled = b.shuffle_vector(bytes16, bytes16, picks)
    return b.sext(doubled, _V16I16) if signed else b.zext(doubled, _V16I16)


def _rows_i32(b, bytes16, half):
    """Rows 8 half .. 8 half + 7 of 16 unsigned bytes as i32 lanes."""
    return b.zext(halves(b, bytes16)[half], _V8I32)


def _add_scaled(b, acc, halves, scale, subtract=False):
    """acc +- float(the two 8-row halves of i32 sums, joined) * scale (16 floats), contracted to FMAs."""
    product = b.fmul(b.sitofp(join(b, *halves), _V16F), scale, flags=("contract",))
    return (b.fsub if subtract else b.fadd)(acc, product, flags=("contract",))


def _record_dot(codegen, doc):
    """The intrinsic of a ROWS16 record step: the arguments of _vnni16's (its _record_signature)."""
    def typer(typingctx, w, xq, xd, bs, nsb, out, r0, nr):
        sig = _record_signature(w, xq, xd, bs, nsb, out, r0, nr)
        return (sig, codegen) if sig is not None else None
    typer.__doc__ = doc
    return intrinsic(typer)


def _q4k_block_sums16(b, w_p, qo, xq_p, xo):
    """Each half's i16 sums of one 32-block's 16 products per lane (8 vpmaddubsw), codes at w_p[qo] (NIB16 chunks
    of 64 bytes, 32 per half), the block's activation codes at xq_p[xo]."""
    sums = [None, None]
    for c in range(4):
        x_lo, x_hi = x_quad(b, xq_p, b.add(xo, _c64(4 * c)), 8), x_quad(b, xq_p, b.add(xo, _c64(16 + 4 * c)), 8)
        for half in range(2):
            packed = _vec_load(b, w_p, b.add(qo, _c64(64 * c + 32 * half)), _V32I8)
            lo = b.and_(packed, _const(_V32I8, 15))
            hi = b.and_(b.lshr(packed, _const(_V32I8, 4)), _const(_V32I8, 15))
            part = b.add(maddubs(b, lo, x_lo), maddubs(b, hi, x_hi))
            sums[half] = part if sums[half] is None else b.add(sums[half], part)
    return sums


def _q4k_rows16_codegen(context, builder, signature, args):
    """_vnni16._q4k_rows16_codegen's sums (the same record, arguments and result) on 8-row halves."""
    (w_p,), _, xq_p, xd_p, bs_p, n, out_p, r0, nr = _rows16_args(context, builder, signature, args, 1, 0)
    half_p = builder.bitcast(w_p, _I16.as_pointer())

    def four_blocks(b, j, sums, s):
        """Blocks 4j .. 4j + 3 of super-block s: sums = [sumi half 0, half 1, summ half 0, half 1]."""
        record = b.mul(s, _c64(Q4K_RECORD))
        qo = b.add(b.add(record, _c64(Q4K_CODES)), b.mul(j, _c64(1024)))
        xo = b.add(b.mul(s, _c64(256)), b.mul(j, _c64(128)))
        so = b.add(record, _c64(Q4K_SM))
        low_shift = _splat(b, b.trunc(b.mul(j, _c64(4)), _I8), _V16I8)
        for k in range(4):
            block_sums = _q4k_block_sums16(b, w_p, b.add(qo, _c64(256 * k)), xq_p, b.add(xo, _c64(32 * k)))
            packed_sm = _vec_load(b, w_p, b.add(so, b.add(b.mul(j, _c64(64)), _c64(16 * k))), _V16I8)
            scales = b.and_(packed_sm, _const(_V16I8, 63))
            low = _vec_load(b, w_p, b.add(so, _c64(128 + 16 * k)), _V16I8)
            low = b.and_(b.lshr(low, low_shift), _const(_V16I8, 15))
            mins = b.or_(low, b.lshr(b.and_(packed_sm, _const(_V16I8, 0xC0)), _const(_V16I8, 2)))
            bsum = _splat(b, b.load(b.gep(bs_p, [b.add(b.add(b.mul(s, _c64(8)), b.mul(j, _c64(4))), _c64(k))])),
                          _V8I32)
            for half in range(2):
                sums[half] = b.add(sums[half], maddwd(b, block_sums[half], _row_pairs(b, scales, half)))
                sums[2 + half] = b.add(sums[2 + half], b.mul(_rows_i32(b, mins, half), bsum))
        return sums

    def body(b, s, acc, _):
        sums = ir_loop(b, 2, lambda b, j, sums: four_blocks(b, j, list(sums), s), [ir.Constant(_V8I32, None)] * 4)
        sumi, summ = sums[:2], sums[2:]
        xd = _splat(b, b.load(b.gep(xd_p, [b.mul(s, _c64(8))])), _V16F)
        halves = b.mul(s, _c64(Q4K_RECORD // 2))      # the record in fp16 units
        d, dm = (b.fmul(lanes_f32(b, half_p, b.add(halves, _c64(k // 2)), False), xd) for k in (Q4K_D, Q4K_DM))
        return _add_scaled(b, _add_scaled(b, acc, sumi, d), summ, dm, subtract=True), _

    return _run_and_store(context, builder, n, body, out_p, r0, nr)


q4k_rows16_dot = _record_dot(_q4k_rows16_codegen, "_vnni16.q4k_rows16_dot for the 256-bit paths.")


def _q6k_rows16_codegen(context, builder, signature, args):
    """_vnni16._q6k_rows16_codegen's sums (the same record, arguments and result) on 8-row halves. A 16-element
    group of 8 rows is 4 vpmaddubsw of the codes 0..63 (8 products per i16 lane: up to 64008, so the i16 sum wraps)
    less 4 of 32 against the same activations (x-only, shared by both halves): the wrapped difference is the exact
    sum of (q - 32) x, at most 8 * 32 * 127 = 32512 in size. One vpmaddwd by the group's scales then."""
    (w_p,), _, xq_p, xd_p, bs_p, n, out_p, r0, nr = _rows16_args(context, builder, signature, args, 1, 0)
    half_p = builder.bitcast(w_p, _I16.as_pointer())
    thirty_two = _const(_V32I8, 32)

    def high_bits(b, crumbs, u):
        """Crumb u of each byte moved to bits 4-5."""
        moved = b.shl(crumbs, _const(_V32I8, 4 - 2 * u)) if u < 2 else \
            (crumbs if u == 2 else b.lshr(crumbs, _const(_V32I8, 2)))
        return b.and_(moved, _const(_V32I8, 0x30))

    def quad(b, q, sumi, s):
        """Groups 4q .. 4q + 3 of super-block s (the record's q-th 832 bytes)."""
        at = b.add(b.mul(s, _c64(Q6K_RECORD)), b.mul(q, _c64(Q6K_QUAD)))
        xo = b.add(b.mul(s, _c64(256)), b.mul(q, _c64(64)))
        for u in range(4):
            p = u >> 1
            xs = [x_quad(b, xq_p, b.add(xo, _c64(16 * u + 4 * c)), 8) for c in range(4)]
            offset = None
            for x in xs:
                part = maddubs(b, thirty_two, x)
                offset = part if offset is None else b.add(offset, part)
            scales = _vec_load(b, w_p, b.add(at, _c64(Q6K_SCALES + 16 * u)), _V16I8)
            for half in range(2):
                sums = None
                for c in range(4):
                    nibbles = _vec_load(b, w_p, b.add(at, _c64(256 + 256 * p + 64 * c + 32 * half)), _V32I8)
                    crumbs = _vec_load(b, w_p, b.add(at, _c64(64 * c + 32 * half)), _V32I8)
                    low = b.lshr(nibbles, _const(_V32I8, 4)) if u & 1 else nibbles
                    codes = b.or_(b.and_(low, _const(_V32I8, 15)), high_bits(b, crumbs, u))
                    part = maddubs(b, codes, xs[c])
                    sums = part if sums is None else b.add(sums, part)
                signed_sums = b.sub(sums, offset)
                sumi[half] = b.add(sumi[half], maddwd(b, signed_sums, _row_pairs(b, scales, half, True)))
        return sumi

    def body(b, s, acc, _):
        sumi = ir_loop(b, 4, lambda b, q, sumi: quad(b, q, list(sumi), s), [ir.Constant(_V8I32, None)] * 2)
        xd = _splat(b, b.load(b.gep(xd_p, [b.mul(s, _c64(8))])), _V16F)
        d = b.fmul(lanes_f32(b, half_p, b.add(b.mul(s, _c64(Q6K_RECORD // 2)), _c64(Q6K_D // 2)), False), xd)
        return _add_scaled(b, acc, sumi, d), _

    return _run_and_store(context, builder, n, body, out_p, r0, nr)


q6k_rows16_dot = _record_dot(_q6k_rows16_codegen, "_vnni16.q6k_rows16_dot for the 256-bit paths.")
