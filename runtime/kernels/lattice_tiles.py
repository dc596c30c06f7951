"""The prefill GEMM's tile decoder for the lattice types, in IR on 16 rows at once: IQ1_S and IQ1_M as EXPANDED_IQ1_*
(a u16 grid index per 8 weights), IQ2_XS as EXPANDED_XS (a u16 index and a sign byte per 8 weights), IQ2_XXS as
EXPANDED_SIGNS (an index byte and a sign byte per 8 weights), IQ2_S as its file has it (an index byte, two more bits
in qh, a sign byte per 8 weights).

The numba decoder it replaced took each row's 8-weight groups one by one (an index, a table word, the signs, two
32-bit stores): 25-35% of a whole IQ1 / IQ2 GEMM at 128 tokens. Here a sub-block of 32 weights of the
16 rows is: each row's index (and sign) bytes loaded and transposed 4 bytes at a time (_gemm._transpose16), then per
8-weight group the 16 rows' table words fetched by one gather (vpgatherqq on x86; LLVM loads them one by one where
the CPU has no gather), the signs applied as byte masks (each sign byte broadcast to its 8 weights, a bit test per
byte) and the words split into TILE order's two 4-weight groups (even and odd 32-bit lanes): two 64-byte stores.
"""
from typing import NamedTuple

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._gemm import _is_c, _row_pointers, _transpose16, _vstore
from ._vnni import _I8, _I32, _I64, _V64I8, _as_i64, _c64, _data, _declare, _splat, _vec_load, counted_loop as _loop

_I1 = ir.IntType(1)
_V16I32, _V16I64 = ir.VectorType(_I32, 16), ir.VectorType(_I64, 16)
_V128I8 = ir.VectorType(_I8, 128)


class TileSpec(NamedTuple):
    """Where a layout keeps sub-block ib's grid indices and signs, in a super-block of block_bytes: the four
    indices at index_at + index_step * ib (u16 each, masked by index_mask, or bytes, with two more bits each in the
    byte at high_at + ib where that is set: IQ2_S's qh), the four sign bytes (bit k: weight k negative) at
    sign_at + sign_step * ib (None: the table words are unsigned weights + word_offset)."""
    block_bytes: int
    index_at: int
    index_step: int
    index_u16: bool
    index_mask: int
    sign_at: object = None
    sign_step: int = 0
    word_offset: int = 0
    high_at: object = None


# tag dtype (as numba names it) -> TileSpec, filled by iquants.py for the layouts this decoder reads
TILE_SPECS = {}


def _lanes(values, elem=_I32):
    return ir.Constant(ir.VectorType(elem, len(values)), list(values))


def _columns(b, rows, at, words):
    """The `words` 32-bit words at byte `at` of each of the 16 rows, transposed: words vectors <16 x i32>."""
    return _transpose16(b, [_vec_load(b, p, at, ir.VectorType(_I32, words)) for p in rows])


def _gather(b, table_p, index):
    """table[index[j]] for the 16 lanes (u64 words)."""
    gather = _declare(b.module, "llvm.masked.gather.v16i64.v16p0", _V16I64,
                      [ir.VectorType(_I64.as_pointer(), 16), _I32, ir.VectorType(_I1, 16), _V16I64])
    base = _splat(b, b.ptrtoint(table_p, _I64), _V16I64)
    addresses = b.add(base, b.shl(b.zext(index, _V16I64), _lanes([3] * 16, _I64)))
    pointers = b.inttoptr(addresses, ir.VectorType(_I64.as_pointer(), 16))
    return b.call(gather, [pointers, ir.Constant(_I32, 8), _lanes([1] * 16, _I1), ir.Constant(_V16I64, None)])


def _biased(b, spec, words, signs):
    """16 rows' table words as 8 weights + 128 each (<128 x i8>): unsigned weights re-biased, or magnitudes with the
    sign bytes' bits (signs: <16 x i32>, one byte each) applied."""
    data = b.bitcast(words, _V128I8)
    if spec.sign_at is None:
        return b.add(data, ir.Constant(_V128I8, [128 - spec.word_offset] * 128))
    spread = b.bitcast(b.mul(b.zext(signs, _V16I64), _lanes([0x0101010101010101] * 16, _I64)), _V128I8)
    negative = b.icmp_unsigned("!=", b.and_(spread, _lanes([1 << (k % 8) for k in range(128)], _I8)),
                               ir.Constant(_V128I8, None))
    bias = ir.Constant(_V128I8, [128] * 128)
    return b.select(negative, b.sub(bias, data), b.add(bias, data))


def _lattice_tile_codegen(spec):
    def codegen(context, builder, signature, args):
        sig = signature.args
        wt_p = _data(context, builder, sig[0], args[0], _I8)
        r0, nsb = _as_i64(builder, args[2]), _as_i64(builder, args[3])
        table_p = _data(context, builder, sig[4], args[4], _I64)
        rows = _row_pointers(context, builder, sig[1], args[1], r0)

        def sub_block(b, k, _):
            s = b.mul(b.ashr(k, _c64(3)), _c64(spec.block_bytes))
            ib = b.and_(k, _c64(7))
            at = b.add(s, b.add(_c64(spec.index_at), b.mul(ib, _c64(spec.index_step))))
            cols = _columns(b, rows, at, 2 if spec.index_u16 else 1)
            signs = high = None
            if spec.high_at is not None:    # a 32-bit load whose low byte is the sub-block's
                high = _columns(b, rows, b.add(s, b.add(_c64(spec.high_at), ib)), 1)[0]
            if spec.sign_at is not None:
                signs = _columns(b, rows, b.add(s, b.add(_c64(spec.sign_at), b.mul(ib, _c64(spec.sign_step)))), 1)[0]
            for i in range(4):
                if spec.index_u16:
                    index = b.lshr(cols[i // 2], _lanes([16 * (i % 2)] * 16))
                else:
                    index = b.lshr(cols[0], _lanes([8 * i] * 16))
                index = b.and_(index, _lanes([spec.index_mask] * 16))
                if high is not None:
                    bits = b.and_(b.lshr(high, _lanes([2 * i] * 16)), _lanes([3] * 16))
                    index = b.or_(index, b.shl(bits, _lanes([8] * 16)))
                sign = b.and_(b.lshr(signs, _lanes([8 * i] * 16)), _lanes([255] * 16)) if signs is not None else None
                words = b.bitcast(_biased(b, spec, _gather(b, table_p, index), sign), ir.VectorType(_I32, 32))
                for half in range(2):   # TILE groups 2i (each row's low 4 weights), 2i + 1 (high 4)
                    group = b.shuffle_vector(words, words, _lanes(range(half, 32, 2)))
                    _vstore(b, b.bitcast(group, _V64I8), wt_p, b.add(b.mul(k, _c64(512)), _c64(64 * (2 * i + half))))
            return []

        _loop(builder, _c64(0), builder.mul(nsb, _c64(8)), _c64(1), [], sub_block, "lattice_tile")
        return context.get_dummy_value()
    return codegen


@intrinsic
def lattice_tile(typingctx, wt, raw, r0, nsb, table, tag):
    """wt (TILE order, the weights + 128) from rows r0..r0+15 (past the end: the last row again) of a lattice
    layout raw (rows, nsb * block bytes) uint8, its super-blocks' table words from table (u64), for a tag whose
    layout TILE_SPECS names."""
    ok = (_is_c(wt, types.uint8) and isinstance(raw, types.Array) and raw.ndim == 2 and raw.layout == "C"
          and raw.dtype == types.uint8 and _is_c(table, types.uint64) and isinstance(tag, types.Array)
          and str(tag.dtype) in TILE_SPECS and all(isinstance(a, types.Integer) for a in (r0, nsb)))
    return (types.void(wt, raw, r0, nsb, table, tag), _lattice_tile_codegen(TILE_SPECS[str(tag.dtype)])) if ok else None
