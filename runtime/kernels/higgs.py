"""kvant's HIGGS types HG4, HG3, HG2 (formats/higgs_types.py): each 64-block of a row is d * grid[code] per value
pair in a Hadamard-rotated basis, and (H w) . (H x) = w . x, so a matvec rotates x once (x's 64-blocks by the same
orthonormal transform) and multiplies the codes' grid points by it: no inverse transform per weight.

Repacked with an f32 d per block, times the type's grid step (higgs_types.grid_step), so every kernel multiplies
the codes' int8 grid points q (higgs_types.grid_codes; the float kernels hold them as floats) and needs no step.
The float kernels take one code byte a pair (32 bytes a block: 1.06x, 1.38x, 2.0x the file for HG4, HG3, HG2); the
VBMI lookup takes the file's code bytes as they are and splits nibbles and crumbs in registers (_lookup512.REGIONS:
1.06x, 1.08x, 1.11x the file); the vpshufb kernels take HG2's codes two a byte as the file has them (1.11x) and
HG3's and HG4's a byte each (1.38x, 1.06x).
- On the avx512vnni path of a CPU with AVX-512 VBMI (Ice Lake and later, Zen 4 and later): the grid as byte tables
  in zmm registers, 64 codes looked up at a time by vpermi2b / vpermb, times the rotated x in int8 per block by
  vpdpbusd, exact in int32 (_lookup512.py).
- On the other x86 paths (avx2, avxvnni, avx512vnni without VBMI): the int8 coordinates q looked up from registers
  by 16-entry byte shuffles (vpshufb): HG2's 16-point grid one table a coordinate, HG3's 64 four and three
  vpblendvb, HG4's 256 its symmetric half (eight tables, seven vpblendvb) and vpsignb for the other half; times the
  same int8 x as the VBMI kernel's by vpmaddubsw (|q|, x with q's sign) and vpmaddwd, exact in int32. (Tried
  before: a vpgatherdd of int16 pairs from a 256-entry table, half the speed; int16 pairs times an int16 x by
  vpmaddwd, 7-32% slower: bench/KERNELS.md.)
- Elsewhere: float, the grid's two coordinates as two float tables.
Prefill: the tokens rotated once; on x86, 16-row tiles decoded by the matvec's own table lookups (vpermi2b or vpshufb)
to bytes q + 128 for the integer GEMM of kernels/_gemm.py (tokens rounded as Q8_0: `rotated_q8_0`), exact in int32;
elsewhere the rows decoded to floats in the rotated basis for the float GEMM.
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from kvant.formats.hadamard import fwht_row
from kvant.formats.higgs_types import BLOCK, HIGGS_TYPES, PAIRS, code_at, grid_codes, grid_step
from kvant.formats.host import CPU_PATH, host_features

from ._common import F32, f16_at, float_matmul
from ._gemm import (GEMM_SCHEMES, _fill_scales, _is_c, _offsets, _row_pointers, _transpose16, _vstore,
                    q8_0_codes, spread_codes, tiles)
from ._isa import FAST, _declare, dot4_256, signed_pair
from ._lookup512 import (CODES, REGIONS, ROW_DECODE, ROW_DOT, ROW_TILE, _pick, code_of, fields, pack_rows,
                         region_offsets, row_bytes, step_bytes, table_registers)
from ._vnni import _as_i64, _c64, _data, _splat, _vec_load, ir_loop
from .registry import Layout, register

PSHUFB = CPU_PATH in ("avx2", "avxvnni", "avx512vnni")    # x86: vpshufb on ymm
LOOKUP = CPU_PATH == "avx512vnni" and "avx512vbmi" in host_features()    # AVX-512 VBMI: vpermi2b tables


@njit(cache=True, parallel=True)
def _repack(raw, c, d, type_size, points, nibbles):
    """d as f32 and a block's 32 codes into c in their order, a byte each or (nibbles; c zeroed) codes p and p + 16
    in byte p's low and high half."""
    for r in prange(raw.shape[0]):
        src = raw[r]
        for b in range(d.shape[1]):
            s = b * type_size
            d[r, b] = f16_at(src, s)
            for p in range(PAIRS):
                code = code_at(src, s + 2, p, points)
                if nibbles:
                    c[r, 16 * b + p % 16] |= code << (4 * (p // 16))
                else:
                    c[r, b * PAIRS + p] = code


def _tables(name: str):
    """The grid's q as two float columns (the float kernels, and every layout's decode to floats)."""
    g = grid_codes(name).astype(np.float32)
    return np.ascontiguousarray(g[:, 0]), np.ascontiguousarray(g[:, 1])


def _step_folded(name: str, repack):
    """repack, its d (the second array) multiplied by the type's grid step: no kernel multiplies by it."""
    step = F32(grid_step(name))

    def folded(raw, cols):
        arrays = repack(raw, cols)
        np.multiply(arrays[1], step, out=arrays[1])
        return arrays
    return folded


def _repacker(name: str):
    _, points, type_size = HIGGS_TYPES[name]
    g0, g1 = _tables(name)

    def repack(raw, cols):
        rows = raw.shape[0]
        c, d = np.empty((rows, cols // 2), np.uint8), np.empty((rows, cols // BLOCK), np.float32)
        _repack(raw, c, d, type_size, points, False)
        return c, d, g0, g1
    return _step_folded(name, repack)


@njit(cache=True, fastmath=FAST)
def rotate(xr, x):
    """xr = x with every 64-block rotated (the weights' basis)."""
    xr[:] = x
    fwht_row(xr, BLOCK)


# ---------------------------------------------------------------- float kernels (every CPU; tests run them)

def _float_scratch(cols):
    return (np.empty(cols, np.float32),)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_float(out, x, c, d, g0, g1, xr):
    rotate(xr, x)
    for r in prange(out.shape[0]):
        acc = F32(0.0)
        for b in range(d.shape[1]):
            s = F32(0.0)
            for t in range(b * PAIRS, (b + 1) * PAIRS):
                k = c[r, t]
                s += g0[k] * xr[2 * t] + g1[k] * xr[2 * t + 1]
            acc += d[r, b] * s
        out[r] = acc


@njit(cache=True, fastmath=FAST)
def _dec_float(dst, r, c, d, g0, g1):
    """Row r in the rotated basis, from its codes a byte each, or (16 bytes a block) two a byte (byte j of a block:
    code j low, code j + 16 high)."""
    nibbles = c.shape[1] == 16 * d.shape[1]
    for t in range(d.shape[1] * PAIRS):
        b, p = t // PAIRS, t % PAIRS
        k = (c[r, 16 * b + p % 16] >> (4 * (p // 16))) & 15 if nibbles else c[r, t]
        s = d[r, b]
        dst[2 * t] = s * g0[k]
        dst[2 * t + 1] = s * g1[k]


# ---------------------------------------------------------------- x86 without VBMI: the grids looked up by vpshufb

# A 16-point grid fits a byte shuffle: two 16-byte tables (both coordinates' int8 q) in both lanes of a ymm. A 64-point
# grid is four such tables a coordinate, looked up by the code's low 4 bits (vpshufb ignores bits 4-6) and chosen
# between by its bits 4 and 5 (three vpblendvb). HG4's 256-point grid is centrally symmetric: its first 128 points
# are eight tables (bits 4-6 choose, seven vpblendvb), and a code's bit 7 (which would make vpshufb give 0, so it is
# cleared first) negates both coordinates (vpsignb by the code with bit 0 set: negative where bit 7 is). A block's 32
# codes fill a ymm in their own order (HG2's two a byte as the file has them: byte j code j low, code j + 16 high;
# HG3's and HG4's a byte each), and two lookups give the 32 first and the 32 second coordinates. The activations are
# x_int8_steps' (the rotated x in int8 a block, split into the values the codes' first and second coordinates meet,
# as the VBMI kernel's), so each coordinate is llama.cpp's AVX2 step: vpmaddubsw of |q| and x with q's sign
# (vpsignb), vpmaddwd by ones (a vpdpbusd on AVX-VNNI), exact in int32.
_F32 = ir.FloatType()
_V16I8, _V32I8 = ir.VectorType(ir.IntType(8), 16), ir.VectorType(ir.IntType(8), 32)
_V8I32, _V8F = ir.VectorType(ir.IntType(32), 8), ir.VectorType(_F32, 8)


def held_points(name: str):
    """The grid's int8 q that the lookup kernels' tables hold: all of a grid of up to 128 points; of a larger one
    its first half, the second being its negation (raises where it is not)."""
    q = grid_codes(name)
    held = min(len(q), 128)
    if held < len(q) and not np.array_equal(q[held:], -q[:held]):
        raise ValueError(f"the {name} grid is not centrally symmetric: the lookup kernels' half table cannot hold it")
    return q[:held]


def _shuffle_tables(name: str):
    """(coordinate, 16-entry part) -> 32 bytes: the part of the int8 q in both lanes."""
    parts = held_points(name).T.astype(np.int8).view(np.uint8).reshape(2, -1, 16)
    return np.ascontiguousarray(np.concatenate([parts, parts], axis=2).reshape(-1))


def _shuffle_repacker(name: str):
    _, points, type_size = HIGGS_TYPES[name]
    tables, (g0, g1) = _shuffle_tables(name), _tables(name)
    per_block = 16 if points == 16 else 32

    def repack(raw, cols):
        rows, blocks = raw.shape[0], cols // BLOCK
        c, d = np.zeros((rows, per_block * blocks), np.uint8), np.empty((rows, blocks), np.float32)
        _repack(raw, c, d, type_size, points, points == 16)
        return c, d, tables, g0, g1
    return _step_folded(name, repack)


def _shuffled_points(points):
    """lookup(builder, table pointer) -> at(b, c_p, i): block i's 32 first and 32 second coordinates (int8 q, code
    order), the tables loaded once before the row's loop."""
    parts = min(points, 128) // 16
    mirrored = points > 128         # bit 7 negates

    def prepare(builder, t_p):
        shuffle = _declare(builder.module, "llvm.x86.avx2.pshuf.b", _V32I8, [_V32I8, _V32I8])
        blend = _declare(builder.module, "llvm.x86.avx2.pblendvb", _V32I8, [_V32I8, _V32I8, _V32I8])
        sign = _declare(builder.module, "llvm.x86.avx2.psign.b", _V32I8, [_V32I8, _V32I8])
        # HG3's 8 tables take half of AVX2's 16 ymm registers, HG4's 16 all of them (LLVM reloads some from L1)
        tables = [[_vec_load(builder, t_p, _c64(32 * (parts * k + q)), _V32I8) for q in range(parts)]
                  for k in range(2)]

        def codes(b, c_p, i):
            if points > 16:             # a byte a code; HG2's two a byte
                return _vec_load(b, c_p, b.mul(i, _c64(32)), _V32I8)
            return fields(b, _vec_load(b, c_p, b.mul(i, _c64(16)), _V16I8), 2, 16, (0, 4), 15)

        def lookup(b, table, idx, selects):
            found = [b.call(shuffle, [part, idx]) for part in table]
            for bit in selects:                 # parts 2m and 2m + 1 by bit 4, then by bit 5, then by bit 6
                found = [b.call(blend, [found[m], found[m + 1], bit]) for m in range(0, len(found), 2)]
            return found[0]

        def byte_splat(value):
            return ir.Constant(_V32I8, [value] * 32)

        def at(b, c_p, i):
            code = codes(b, c_p, i)
            idx = b.and_(code, byte_splat(0x7F)) if mirrored else code
            selects = [b.shl(idx, byte_splat(7 - bit)) for bit in (4, 5, 6)][:parts.bit_length() - 1]
            found = [lookup(b, t, idx, selects) for t in tables]
            if mirrored:
                negate = b.or_(code, byte_splat(1))
                found = [b.call(sign, [q, negate]) for q in found]
            return found
        return at
    return prepare


def _shuffle_row(points, name):
    """An intrinsic row_dot(c, d, tables, xs, xl, nb): sum over nb blocks of d[b] * x's scale * the int32 dot product
    of block b's 32 grid points with its int8 x (x_int8_steps' layout: block b's first-coordinate bytes at
    (b // 2) * 128 + (b % 2) * 32, its second ones 64 further, its scale at xl[8 b])."""
    block_points = _shuffled_points(points)

    def codegen(context, builder, signature, args):
        c_p, d_p, t_p, xs_p, xl_p = (_data(context, builder, signature.args[k], args[k], elem) for k, elem in
                                     enumerate((ir.IntType(8), _F32, ir.IntType(8), ir.IntType(8), _F32)))
        at = block_points(builder, t_p)

        def block(b, i, state):
            first = b.add(b.mul(b.ashr(i, _c64(1)), _c64(2 * CODES)), b.mul(b.and_(i, _c64(1)), _c64(PAIRS)))
            sums = ir.Constant(_V8I32, None)
            for k, q in enumerate(at(b, c_p, i)):
                x = _vec_load(b, xs_p, b.add(first, _c64(CODES * k)), _V32I8)
                sums = dot4_256(b, sums, *signed_pair(b, q, x, biased=False))
            scale = b.fmul(b.load(b.gep(d_p, [i])), b.load(b.gep(xl_p, [b.mul(i, _c64(8))])))
            product = b.fmul(b.sitofp(sums, _V8F), _splat(b, scale, _V8F), flags=("contract",))
            return [b.fadd(state[0], product, flags=("contract",))]

        acc, = ir_loop(builder, _as_i64(builder, args[5]), block, [ir.Constant(_V8F, None)])
        fsum = _declare(builder.module, "llvm.vector.reduce.fadd.v8f32", _F32, [_F32, _V8F])
        return builder.call(fsum, [ir.Constant(_F32, 0.0), acc], fastmath=("reassoc",))

    def typer(typingctx, c, d, tables, xs, xl, nb):
        ok = (isinstance(c, types.Array) and c.dtype == types.uint8 and isinstance(tables, types.Array)
              and tables.dtype == types.uint8 and isinstance(xs, types.Array) and xs.dtype == types.int8
              and d.dtype == types.float32 and xl.dtype == types.float32 and isinstance(nb, types.Integer))
        return (types.float32(c, d, tables, xs, xl, nb), codegen) if ok else None
    typer.__name__ = name
    return intrinsic(typer)


# the row dot product of a 16-, 64- or 256-point grid's codes, looked up by vpshufb in _shuffle_tables
_SHUFFLE_DOT_16, _SHUFFLE_DOT_64, _SHUFFLE_DOT_256 = (_shuffle_row(p, f"shuffle_row_dot_{p}") for p in (16, 64, 256))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_shuffle(out, x, c, d, tables, g0, g1, xr, xs, xl, corr):
    rotate(xr, x)
    x_int8_steps(xs, xl, corr, xr)
    points = g0.shape[0]
    for r in prange(out.shape[0]):
        if points == 16:
            s = _SHUFFLE_DOT_16(c[r], d[r], tables, xs, xl, d.shape[1])
        elif points == 64:
            s = _SHUFFLE_DOT_64(c[r], d[r], tables, xs, xl, d.shape[1])
        else:
            s = _SHUFFLE_DOT_256(c[r], d[r], tables, xs, xl, d.shape[1])
        out[r] = s


def _mm_shuffle_rotated(out, xr, c, d, tables, g0, g1):
    """The float GEMM on rows decoded by _dec_float (which reads HG2's two codes a byte too): the vpshufb tables
    are not needed."""
    _mm_float_rotated(out, xr, c, d, g0, g1)


def _shuffle_tile(points):
    """An intrinsic tile(wt, c, tables, r0, nb): wt in the integer GEMM's TILE order (kernels/_gemm.py) from rows
    r0..r0 + 15 of c (rows past the end: the last again), each value q + 128 as a byte: per block and row its two
    coordinates looked up as the matvec does, interleaved into value order (two 32-blocks of eight 4-byte groups),
    and each 32-block of the 16 rows transposed 4 bytes at a time (as _lookup512's ROW_TILE)."""
    block_points = _shuffled_points(points)
    value_order = ir.Constant(ir.VectorType(ir.IntType(32), 64), [k // 2 + 32 * (k % 2) for k in range(64)])
    flip = ir.Constant(ir.VectorType(ir.IntType(8), 64), [-128] * 64)
    words = ir.VectorType(ir.IntType(32), 16)

    def codegen(context, builder, signature, args):
        wt_p, t_p = (_data(context, builder, signature.args[k], args[k], ir.IntType(8)) for k in (0, 2))
        r0, nb = (_as_i64(builder, a) for a in args[3:5])
        rows = _row_pointers(context, builder, signature.args[1], args[1], r0)
        at = block_points(builder, t_p)

        def block(b, i, _):
            halves = []
            for row_p in rows:
                q0, q1 = at(b, row_p, i)
                values = b.bitcast(b.xor(b.shuffle_vector(q0, q1, value_order), flip), words)
                halves.append([_pick(b, values, list(range(8 * k, 8 * k + 8))) for k in (0, 1)])
            for k in (0, 1):
                cols = _transpose16(b, [h[k] for h in halves])
                dst = b.mul(b.add(b.mul(i, _c64(2)), _c64(k)), _c64(512))
                for g in range(8):
                    _vstore(b, cols[g], wt_p, b.add(dst, _c64(64 * g)))
            return []

        ir_loop(builder, nb, block, [])
        return context.get_dummy_value()

    def typer(typingctx, wt, c, tables, r0, nb):
        ok = (_is_c(wt, types.uint8) and isinstance(c, types.Array) and c.ndim == 2 and c.layout == "C"
              and c.dtype == types.uint8 and tables.dtype == types.uint8 and isinstance(r0, types.Integer)
              and isinstance(nb, types.Integer))
        return (types.void(wt, c, tables, r0, nb), codegen) if ok else None
    typer.__name__ = f"shuffle_tile_{points}"
    return intrinsic(typer)


_SHUFFLE_TILE_16, _SHUFFLE_TILE_64, _SHUFFLE_TILE_256 = (_shuffle_tile(p) for p in (16, 64, 256))


@njit(cache=True, fastmath=FAST)
def _shuffle_rows(wt, ws, wm, r0, c, d, tables, g0, g1):
    """Rows r0..r0 + 15 in TILE order (q + 128) and their scales d per 32 (g0: only its length, the grid's size, is
    read)."""
    points = g0.shape[0]
    if points == 256:
        _SHUFFLE_TILE_256(wt, c, tables, r0, d.shape[1])
    elif points == 64:
        _SHUFFLE_TILE_64(wt, c, tables, r0, d.shape[1])
    else:
        _SHUFFLE_TILE_16(wt, c, tables, r0, d.shape[1])
    _fill_scales(ws, d, r0, 1)


@njit(cache=True, parallel=True)
def _gemm_shuffle(out, xq, xd, xs, xm, c, d, tables, g0, g1):
    """The prefill on x86 without VBMI: rows decoded by the vpshufb lookups to bytes q + 128, times the rotated
    tokens' Q8_0 codes (kernels/_gemm.py), exact in int32 per 32-block."""
    tiles(out, xq, xd, _offsets(xs, 128), xm, False, True, _shuffle_rows, (c, d, tables, g0, g1))


# ---------------------------------------------------------------- AVX-512 VBMI: byte tables looked up by vpermi2b

def _byte_tables(name: str):
    """_lookup512's two tables (q + 128 of each coordinate), each padded to whole zmm (pads: q = 0); of the 256-point
    grid its first half, the second being its negation."""
    held = held_points(name)
    out = np.full((2, 64 * table_registers(len(grid_codes(name)))), 128, np.uint8)
    out[:, :len(held)] = (held + 128).T
    return out.reshape(-1)


def _lookup_repacker(name: str):
    _, points, type_size = HIGGS_TYPES[name]
    tables, (g0, g1) = _byte_tables(name), _tables(name)
    sizes, offsets = np.array(REGIONS[points]), region_offsets(points)
    assert sizes.sum() == type_size - 2

    def repack(raw, cols):
        rows, blocks = raw.shape[0], cols // BLOCK
        c, d = np.zeros((rows, row_bytes(points, blocks)), np.uint8), np.empty((rows, blocks), np.float32)
        pack_rows(raw, c, d, type_size, sizes, offsets, step_bytes(points))
        return c, d, tables, g0, g1, offsets
    return _step_folded(name, repack)


def _lookup_scratch(cols):
    steps = -(-cols // (2 * BLOCK))
    # zeros: an odd last block's partner stays zero in every call
    return (np.empty(cols, np.float32), np.zeros(steps * 2 * CODES, np.int8), np.zeros(steps * 16, np.float32),
            np.zeros(steps * 16, np.int32))


@njit(cache=True, fastmath=FAST, inline="always")
def _block_scale(xr, b, limit):
    """(amax / limit, limit / amax or 0) of xr's 64-block b: the step of its codes and its inverse."""
    amax = F32(0.0)
    for j in range(b * BLOCK, (b + 1) * BLOCK):
        amax = max(amax, abs(xr[j]))
    return amax / limit, limit / amax if amax > 0 else F32(0.0)


@njit(cache=True, fastmath=FAST)
def x_int8_steps(xs, xl, corr, xr):
    """xr's 64-blocks in int8 (amax / 127 a block, as Q8_0) laid out for _lookup512 (the vpshufb kernels read it a
    block at a time and leave corr): per step of two blocks the 64 values the codes' first coordinates meet, then
    the 64 their second ones meet; per int32 lane (4 codes) its x scale xl and corr = -128 * the sum of its 8 values
    (the table bytes' offset)."""
    for b in range(xr.shape[0] // BLOCK):
        scale, inv = _block_scale(xr, b, F32(127.0))
        first = (b // 2) * 2 * CODES + (b % 2) * PAIRS
        lane0 = (b // 2) * 16 + (b % 2) * 8
        for lane in range(8):
            total = 0
            for t in range(4 * lane, 4 * lane + 4):
                e = np.int8(np.rint(xr[b * BLOCK + 2 * t] * inv))
                o = np.int8(np.rint(xr[b * BLOCK + 2 * t + 1] * inv))
                xs[first + t] = e
                xs[first + CODES + t] = o
                total += np.int32(e) + np.int32(o)
            xl[lane0 + lane] = scale
            corr[lane0 + lane] = -128 * total


_DOT_256, _DOT_64, _DOT_16 = (ROW_DOT[p] for p in (256, 64, 16))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_lookup(out, x, c, d, tables, g0, g1, offsets, xr, xs, xl, corr):
    rotate(xr, x)
    x_int8_steps(xs, xl, corr, xr)
    points = g0.shape[0]
    for r in prange(out.shape[0]):
        if points == 256:
            s = _DOT_256(c[r], d[r], tables, xs, xl, corr, d.shape[1])
        elif points == 64:
            s = _DOT_64(c[r], d[r], tables, xs, xl, corr, d.shape[1])
        else:
            s = _DOT_16(c[r], d[r], tables, xs, xl, corr, d.shape[1])
        out[r] = s


_DECODE_256, _DECODE_64, _DECODE_16 = (ROW_DECODE[p] for p in (256, 64, 16))


@njit(cache=True, fastmath=FAST)
def _dec_lookup(dst, r, c, d, tables, g0, g1, offsets):
    """Row r in the rotated basis: two blocks a step from the byte tables, an odd last block from the float grid."""
    nb, points = d.shape[1], g0.shape[0]
    if points == 256:
        _DECODE_256(dst, c[r], d[r], tables, nb // 2)
    elif points == 64:
        _DECODE_64(dst, c[r], d[r], tables, nb // 2)
    else:
        _DECODE_16(dst, c[r], d[r], tables, nb // 2)
    if nb % 2:
        s = d[r, nb - 1]
        for t in range((nb - 1) * PAIRS, nb * PAIRS):
            k = code_of(c[r], t, points, offsets)
            dst[2 * t] = s * g0[k]
            dst[2 * t + 1] = s * g1[k]


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_lookup_rotated(out, xr, c, d, tables, g0, g1, offsets):
    float_matmul(out, xr, _dec_lookup, (c, d, tables, g0, g1, offsets))


_TILE_256, _TILE_64, _TILE_16 = (ROW_TILE[p] for p in (256, 64, 16))
ROTATED_Q8_0 = "rotated_q8_0"


@njit(cache=True, fastmath=FAST)
def _lookup_tile(wt, ws, wm, r0, c, d, tables, g0):
    """Rows r0..r0 + 15 in the integer GEMM's TILE order (q + 128) and their scales d per 32 (g0, the
    first coordinates' float table: only its length, the grid's size, is read)."""
    nb, points = d.shape[1], g0.shape[0]
    if points == 256:
        _TILE_256(wt, c, tables, r0, nb)
    elif points == 64:
        _TILE_64(wt, c, tables, r0, nb)
    else:
        _TILE_16(wt, c, tables, r0, nb)
    _fill_scales(ws, d, r0, 1)


@njit(cache=True, parallel=True)
def _gemm_lookup(out, xq, xd, xs, xm, c, d, tables, g0, g1, offsets):
    """The prefill on AVX-512 VBMI: rows decoded by the lookup tables to bytes q + 128 (offset 128, as Q8_0's),
    times the rotated tokens' Q8_0 codes by vpdpbusd (kernels/_gemm.py), exact in int32 per 32-block."""
    tiles(out, xq, xd, _offsets(xs, 128), xm, False, True, _lookup_tile, (c, d, tables, g0))


@njit(cache=True, fastmath=FAST, parallel=True)
def _rotate_rows(xr, x):
    for i in prange(x.shape[0]):
        rotate(xr[i], x[i])


def rotated_q8_0_codes(xq, xd, xs, xm, x):
    """_gemm.GEMM_SCHEMES' codes of every token rotated (the weights' basis), then rounded as Q8_0."""
    xr = np.empty_like(x)
    _rotate_rows(xr, x)
    q8_0_codes(xq, xd, xs, xm, xr)


GEMM_SCHEMES[ROTATED_Q8_0] = rotated_q8_0_codes


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_float_rotated(out, xr, c, d, g0, g1):
    float_matmul(out, xr, _dec_float, (c, d, g0, g1))


def _rotated_first(matmul_rotated):
    def matmul(out, x, *arrays):
        xr = np.empty_like(x)
        _rotate_rows(xr, x)
        matmul_rotated(out, xr, *arrays)
    return matmul


_NOTE = "codes + f32 d per 64, x rotated once a call"
# the layouts of every kind: the float one runs on CPUs with none of the others (and in tests everywhere)
FLOAT_LAYOUTS = {name: Layout(BLOCK, _repacker(name), _float_scratch, _mv_float,
                              _rotated_first(_mm_float_rotated), _NOTE + " (a byte a pair)") for name in HIGGS_TYPES}
LOOKUP_LAYOUTS = {name: Layout(BLOCK, _lookup_repacker(name), _lookup_scratch, _mv_lookup,
                               _rotated_first(_mm_lookup_rotated),
                               _NOTE + " (the file's packing), grid bytes looked up by vpermi2b x int8 rotated x",
                               gemm=spread_codes(_gemm_lookup), gemm_scheme=ROTATED_Q8_0)
                  for name in HIGGS_TYPES}
SHUFFLE_LAYOUTS = {name: Layout(BLOCK, _shuffle_repacker(name), _lookup_scratch, _mv_shuffle,
                                 _rotated_first(_mm_shuffle_rotated),
                                 _NOTE + " (code order), grid bytes looked up by vpshufb x int8 rotated x",
                                 gemm=spread_codes(_gemm_shuffle), gemm_scheme=ROTATED_Q8_0)
                   for name in HIGGS_TYPES}
IN_FORCE = LOOKUP_LAYOUTS if LOOKUP else SHUFFLE_LAYOUTS if PSHUFB else FLOAT_LAYOUTS
for _name in HIGGS_TYPES:
    register(_name, FLOAT_LAYOUTS[_name], None if IN_FORCE is FLOAT_LAYOUTS else IN_FORCE[_name])
