"""HIGGS rows on AVX-512 VBMI: the grid as byte tables in registers, looked up 64 codes at a time by vpermi2b.

A grid coordinate is an int8 q (in its type's grid steps: formats/higgs_types.py), held as the unsigned byte q + 128
in one byte table a coordinate; the 256-point grid's table holds its first 128 points in two zmm (vpermi2b reads
them by the low 7 bits of an index; the top bit negates the byte: the grid is centrally symmetric), one of <= 64
entries is one zmm (vpermb). The activations are the
rotated x in int8 per 64-block (as Q8_0's), split into the values each code's first and second coordinate meet;
vpdpbusd multiplies the unsigned table bytes by them:
  sum q x = sum (q + 128) x - 128 sum x,
exact in int32, -128 sum x per lane computed once a call (`corr`, where each lane's sum starts). One step is 64
codes, two blocks: lanes 0..7 of the int32 sums are the first block's, 8..15 the second's, each scaled by its d
times its x scale.

The codes stay packed as the file has them (formats/higgs_types.py: HG4 a byte a code, HG3 a nibble and a crumb, HG2
a nibble), only the fp16 d taken out: a step holds each of a block's code regions (REGIONS) for its first block, then
for its second, and the nibbles and crumbs are split into byte indices in registers (_step_codes) before vpermb.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from kvant.formats.higgs_types import code_in

from ._common import f16_at
from ._gemm import _is_c, _row_pointers, _transpose16, _vstore
from ._isa import _declare
from ._vnni import _as_i64, _c64, _data, _vec_load, ir_loop

_F32, _I8, _I32 = ir.FloatType(), ir.IntType(8), ir.IntType(32)
_V64I8, _V16I32, _V16F = ir.VectorType(_I8, 64), ir.VectorType(_I32, 16), ir.VectorType(_F32, 16)
CODES = 64                 # codes (value pairs) a step: two 64-value blocks
TABLES = 2                 # q + 128 of the first coordinate, then of the second
# a block's code bytes by grid size, as the file has them: 32 codes a byte each (256 points); 16 bytes of nibbles
# (byte j: code j low, code j + 16 high), then for 64 points 8 bytes of crumbs (byte j, bits 2k: code j + 8k's top)
REGIONS = {256: (32,), 64: (16, 8), 16: (16,)}
POINTS = tuple(REGIONS)


def step_bytes(points: int) -> int:
    return 2 * sum(REGIONS[points])


def region_offsets(points: int) -> np.ndarray:
    """(region, block of the step) -> the region's byte offset in a step: each region for both blocks in turn."""
    sizes = np.array(REGIONS[points])
    return (2 * (np.cumsum(sizes) - sizes))[:, None] + np.outer(sizes, [0, 1])


def row_bytes(points: int, blocks: int) -> int:
    """Bytes of a row's packed codes: whole steps, and an odd last block's regions where a full step puts them."""
    tail = int(region_offsets(points)[-1, 0]) + REGIONS[points][-1] if blocks % 2 else 0
    return (blocks // 2) * step_bytes(points) + tail


@njit(cache=True, parallel=True)
def pack_rows(raw, c, d, type_size, sizes, offsets, step):
    """Each row's blocks (fp16 d, then the code regions of `sizes`) into d (as f32) and c (the steps' layout)."""
    for r in prange(raw.shape[0]):
        src = raw[r]
        for b in range(d.shape[1]):
            s = b * type_size
            d[r, b] = f16_at(src, s)
            p = s + 2
            for k in range(len(sizes)):
                q = (b // 2) * step + offsets[k, b % 2]
                c[r, q:q + sizes[k]] = src[p:p + sizes[k]]
                p += sizes[k]


@njit(cache=True, inline="always")
def code_of(c, t, points, offsets):
    """Code t of a packed row c (the scalar decode of an odd last block)."""
    b, half = t // 32, (t // 32) % 2
    base = (b // 2) * (2 * offsets[-1, 1] - offsets[-1, 0])      # the step: the last region's second part's end
    return code_in(c, base + offsets[0, half], base + offsets[-1, half], t % 32, points)


def table_registers(points: int) -> int:
    """zmm registers a coordinate's table takes: a 16- or 64-point grid one (padded to 64 bytes); the 256-point grid
    two, its first 128 points (the others are their negations: higgs_grids.SYMMETRIC)."""
    return 1 if points <= 64 else 2


def _lookup(b, table, idx, top):
    """table[idx] per byte: vpermb from one register; or, 256 points, one vpermi2b over the first 128 entries by
    the index's low 7 bits and, where its top bit is set, that byte negated: 256 - (q + 128) = -q + 128, the
    point's negation (no q is -128)."""
    if len(table) == 1:
        fn = _declare(b.module, "llvm.x86.avx512.permvar.qi.512", _V64I8, [_V64I8, _V64I8])
        return b.call(fn, [table[0], idx])
    fn = _declare(b.module, "llvm.x86.avx512.vpermi2var.qi.512", _V64I8, [_V64I8, _V64I8, _V64I8])
    half = b.call(fn, [table[0], idx, table[1]])
    return b.select(top, b.sub(ir.Constant(_V64I8, None), half), half)


def _load_tables(builder, t_p, regs):
    return [[_vec_load(builder, t_p, _c64(64 * (regs * k + r)), _V64I8) for r in range(regs)]
            for k in range(TABLES)]


def _bytes(n, v):
    return ir.Constant(ir.VectorType(_I8, n), [v] * n)


def _pick(b, v, order):
    """v's bytes in `order`; an index of -1 gives 0."""
    n = v.type.count
    return b.shuffle_vector(v, ir.Constant(v.type, None),
                            ir.Constant(ir.VectorType(_I32, len(order)), [n if k < 0 else k for k in order]))


def fields(b, v, copies, width, shifts, mask):
    """Each `width`-byte group of v (8 or 16 bytes) repeated `copies` times, the k-th copy shifted right by
    shifts[k] bits (in 64-bit lanes: a bit that crosses a byte is masked away) and masked: a lane shuffle, a variable
    shift (vpsrlvq, AVX2 and AVX-512) and an and, where a generic shuffle of bytes would need a cross-lane permute."""
    groups = v.type.count // width
    w = _pick(b, v, [g * width + i for g in range(groups) for _ in range(copies) for i in range(width)])
    lane = ir.IntType(64)
    per_group = width * 8 // lane.width
    lanes = ir.VectorType(lane, w.type.count * 8 // lane.width)
    counts = ir.Constant(lanes, [shifts[k] for _ in range(groups) for k in range(copies) for _ in range(per_group)])
    return b.and_(b.bitcast(b.lshr(b.bitcast(w, lanes), counts), w.type), _bytes(w.type.count, mask))


def _step_codes(b, c_p, base, points, blocks):
    """The 64 codes of the step at byte `base` as byte indices, code order; blocks = 1: an odd last block's 32, then
    zeros."""
    offs = region_offsets(points)
    pad = [-1] * (CODES - 32 * blocks)
    if points == 256:
        return _pick(b, _vec_load(b, c_p, base, ir.VectorType(_I8, 32 * blocks)), list(range(32 * blocks)) + pad)
    # codes u < 16 of a block are its 16 nibble bytes' low nibbles, u >= 16 their high ones
    nib = _vec_load(b, c_p, b.add(base, _c64(int(offs[0, 0]))), ir.VectorType(_I8, 16 * blocks))
    codes = fields(b, nib, 2, 16, (0, 4), 15)
    if points == 64:
        # and the top 2 bits of code u are bits 2k, 2k + 1 of its crumb byte u % 8, k = u // 8
        crumbs = _vec_load(b, c_p, b.add(base, _c64(int(offs[1, 0]))), ir.VectorType(_I8, 8 * blocks))
        tops = fields(b, crumbs, 4, 8, (0, 2, 4, 6), 3)
        codes = b.or_(codes, b.shl(tops, _bytes(32 * blocks, 4)))
    return _pick(b, codes, list(range(32 * blocks)) + pad)


def _lookup_all(b, tables, idx):
    """The two tables looked up at the 64 codes idx: q + 128 of the first coordinate, then of the second."""
    top = b.icmp_signed("<", idx, ir.Constant(_V64I8, None))
    return [_lookup(b, t, idx, top) for t in tables]


def _row_codegen(points, context, builder, signature, args):
    c_p, d_p, t_p, xs_p, xl_p, corr_p = (
        _data(context, builder, signature.args[k], args[k], elem)
        for k, elem in enumerate((_I8, _F32, _I8, _I8, _F32, _I32)))
    nb = _as_i64(builder, args[6])
    tables = _load_tables(builder, t_p, table_registers(points))
    dot = _declare(builder.module, "llvm.x86.avx512.vpdpbusd.512", _V16I32, [_V16I32, _V64I8, _V64I8])

    def step(b, s, idx, dscale, acc):
        first, second = _lookup_all(b, tables, idx)
        xe = _vec_load(b, xs_p, b.mul(s, _c64(2 * CODES)), _V64I8)
        xo = _vec_load(b, xs_p, b.add(b.mul(s, _c64(2 * CODES)), _c64(CODES)), _V64I8)
        lane = b.mul(s, _c64(16))
        exact = b.call(dot, [b.call(dot, [_vec_load(b, corr_p, lane, _V16I32), first, xe]), second, xo])
        scale = b.fmul(dscale, _vec_load(b, xl_p, lane, _V16F))
        return b.fadd(acc, b.fmul(b.sitofp(exact, _V16F), scale, flags=("contract",)), flags=("contract",))

    pair = ir.VectorType(_F32, 2)
    halves_mask = ir.Constant(ir.VectorType(_I32, 16), [0] * 8 + [1] * 8)

    def full(b, s, state):
        idx = _step_codes(b, c_p, b.mul(s, _c64(step_bytes(points))), points, 2)
        dpair = b.load(b.bitcast(b.gep(d_p, [b.mul(s, _c64(2))]), pair.as_pointer()), align=4)
        return [step(b, s, idx, b.shuffle_vector(dpair, dpair, halves_mask), state[0])]

    nfull = builder.ashr(nb, _c64(1))
    acc, = ir_loop(builder, nfull, full, [ir.Constant(_V16F, None)])
    before = builder.block
    with builder.if_then(builder.icmp_signed("!=", builder.and_(nb, _c64(1)), _c64(0))):
        # an odd last block: its 32 codes, zeros after (their x, corr and x scale lanes are zero)
        idx = _step_codes(builder, c_p, builder.mul(nfull, _c64(step_bytes(points))), points, 1)
        dlast = builder.load(builder.gep(d_p, [builder.mul(nfull, _c64(2))]))
        dvec = builder.shuffle_vector(builder.insert_element(ir.Constant(ir.VectorType(_F32, 2), None), dlast,
                                                             ir.Constant(_I32, 0)),
                                      ir.Constant(ir.VectorType(_F32, 2), None), halves_mask)
        tail_acc = step(builder, nfull, idx, dvec, acc)
        tail_block = builder.block
    total = builder.phi(_V16F)
    total.add_incoming(acc, before)
    total.add_incoming(tail_acc, tail_block)
    fsum = _declare(builder.module, "llvm.vector.reduce.fadd.v16f32", _F32, [_F32, _V16F])
    return builder.call(fsum, [ir.Constant(_F32, 0.0), total], fastmath=("reassoc",))


def _row_dot(points):
    def typer(typingctx, c, d, tables, xs, xl, corr, nb):
        ok = (isinstance(c, types.Array) and c.dtype == types.uint8 and tables.dtype == types.uint8
              and xs.dtype == types.int8 and d.dtype == types.float32 and xl.dtype == types.float32
              and corr.dtype == types.int32 and isinstance(nb, types.Integer))
        return (types.float32(c, d, tables, xs, xl, corr, nb),
                lambda *a: _row_codegen(points, *a)) if ok else None
    typer.__name__ = f"lookup_row_dot_{points}"
    return intrinsic(typer)


# by grid size: sum over nb blocks of d[b] * (the block's codes in c looked up in `tables`) . (the int8 x in xs of
# the blocks' steps, scaled per lane by xl, plus corr)
ROW_DOT = {points: _row_dot(points) for points in POINTS}


def _decode_codegen(points, context, builder, signature, args):
    dst_p, c_p, d_p, t_p = (_data(context, builder, signature.args[k], args[k], elem)
                            for k, elem in enumerate((_F32, _I8, _F32, _I8)))
    nsteps = _as_i64(builder, args[4])
    tables = _load_tables(builder, t_p, table_registers(points))
    v64f, v128f = ir.VectorType(_F32, 64), ir.VectorType(_F32, 128)
    interleave = _value_order()
    flip = _bytes(64, -128)         # q + 128 with its top bit flipped: q as an int8
    block_of = ir.Constant(ir.VectorType(_I32, 128), [k // 64 for k in range(128)])

    def step(b, s, _):
        idx = _step_codes(b, c_p, b.mul(s, _c64(step_bytes(points))), points, 2)
        coords = [b.sitofp(b.xor(t, flip), v64f) for t in _lookup_all(b, tables, idx)]
        values = b.shuffle_vector(coords[0], coords[1], interleave)        # value 2t, 2t + 1: code t's two
        dpair = b.load(b.bitcast(b.gep(d_p, [b.mul(s, _c64(2))]), ir.VectorType(_F32, 2).as_pointer()), align=4)
        scale = b.shuffle_vector(dpair, dpair, block_of)
        dst = b.bitcast(b.gep(dst_p, [b.mul(s, _c64(2 * CODES))]), v128f.as_pointer())
        b.store(b.fmul(values, scale), dst, align=4)
        return []

    ir_loop(builder, nsteps, step, [])
    return context.get_dummy_value()


def _row_decode(points):
    def typer(typingctx, dst, c, d, tables, nsteps):
        ok = (isinstance(dst, types.Array) and dst.dtype == types.float32 and c.dtype == types.uint8
              and d.dtype == types.float32 and tables.dtype == types.uint8 and isinstance(nsteps, types.Integer))
        codegen = lambda *a: _decode_codegen(points, *a)      # noqa: E731
        return (types.void(dst, c, d, tables, nsteps), codegen) if ok else None
    typer.__name__ = f"lookup_row_decode_{points}"
    return intrinsic(typer)


# dst[: 128 nsteps] = the first 2 nsteps blocks of a row in the rotated basis: d of the block (the repack's, the
# grid's step included) times the code's q (both coordinates), from the same tables as ROW_DOT
ROW_DECODE = {points: _row_decode(points) for points in POINTS}


def _value_order():
    """The shuffle of the two coordinates' 64 looked-up bytes (or values) into value order: value 2t, 2t + 1 are code
    t's first and second."""
    return ir.Constant(ir.VectorType(_I32, 2 * CODES), [k // 2 + CODES * (k % 2) for k in range(2 * CODES)])


def _tile_codegen(points, context, builder, signature, args):
    """ROW_TILE: per step (two blocks) each of the 16 rows' 64 codes looked up in both tables, its 128 bytes in value
    order cut into four 32-blocks of eight 4-byte groups, and each 32-block of the 16 rows transposed 4 bytes at a
    time into TILE order (as _gemm._crumb_tile_codegen); an odd last block: its two 32-blocks only."""
    wt_p, t_p = (_data(context, builder, signature.args[k], args[k], _I8) for k in (0, 2))
    r0, nb = (_as_i64(builder, a) for a in args[3:5])
    rows = _row_pointers(context, builder, signature.args[1], args[1], r0)
    tables = _load_tables(builder, t_p, table_registers(points))
    interleave = _value_order()
    v32i32 = ir.VectorType(_I32, 32)

    def row_words(b, row_p, base, blocks):
        """A row's values of the step, q + 128 in value order, as four <8 x i32>: one 32-block each."""
        first, second = _lookup_all(b, tables, _step_codes(b, row_p, base, points, blocks))
        words = b.bitcast(b.shuffle_vector(first, second, interleave), v32i32)
        return [_pick(b, words, list(range(8 * k, 8 * k + 8))) for k in range(4)]

    def emit(b, s, blocks):
        parts = [row_words(b, p, b.mul(s, _c64(step_bytes(points))), blocks) for p in rows]
        for k in range(2 * blocks):             # the step's 32-blocks: 8 groups of 4 values, 16 rows a group
            cols = _transpose16(b, [part[k] for part in parts])
            dst = b.mul(b.add(b.mul(s, _c64(4)), _c64(k)), _c64(512))
            for g in range(8):
                _vstore(b, b.bitcast(cols[g], _V64I8), wt_p, b.add(dst, _c64(64 * g)))

    def full(b, s, _):
        emit(b, s, 2)
        return []

    nfull = builder.ashr(nb, _c64(1))
    ir_loop(builder, nfull, full, [])
    with builder.if_then(builder.icmp_signed("!=", builder.and_(nb, _c64(1)), _c64(0))):
        emit(builder, nfull, 1)
    return context.get_dummy_value()


def _row_tile(points):
    def typer(typingctx, wt, c, tables, r0, nb):
        ok = (_is_c(wt, types.uint8) and isinstance(c, types.Array) and c.ndim == 2
              and c.layout == "C" and c.dtype == types.uint8 and tables.dtype == types.uint8
              and isinstance(r0, types.Integer) and isinstance(nb, types.Integer))
        return (types.void(wt, c, tables, r0, nb), lambda *a: _tile_codegen(points, *a)) if ok else None
    typer.__name__ = f"lookup_tile_{points}"
    return intrinsic(typer)


# wt (the integer GEMM's TILE order, kernels/_gemm.py) from rows r0..r0 + 15 of packed codes c (nb 64-blocks): each
# value as q + 128, an unsigned byte, from the same tables as ROW_DOT
ROW_TILE = {points: _row_tile(points) for points in POINTS}
