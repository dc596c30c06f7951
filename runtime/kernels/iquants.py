"""The lattice types IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, run from their files' bytes or close to them.

llama.cpp's dot products for them (ggml_vec_dot_iq*_q8_K) sum int8 weights times Q8_K activation codes exactly, scale
the sums by small odd integers per 16 or 32 elements, and multiply by the fp16 d, the activations' scale and a
constant per super-block. Every type's super-block decodes here into one shape: 256 weights w (int8, stored + 128),
16 integer scales ls (one per 16 elements) and a float dscale, so that its dot product with Q8_K codes q is

    dscale * xd * sum_k ls[k] * sum_{j in group k} w[j] q[j]

- IQ2_XXS, IQ2_XS, IQ2_S: w = a grid value (8, 25 or 43) with its sign, ls = 2 s + 1, dscale = d / 8;
- IQ3_XXS: w = +-grid (4..62), ls = 2 s + 1, dscale = d / 4; IQ3_S: the same with dscale = d;
- IQ1_S, IQ1_M: w = 8 grid + delta (grid -1, 0, 1; delta +-1: -9..9), ls = 2 s + 1, dscale = d / 8. llama.cpp sums
  sumi + IQ1_DELTA * sumi1 with sumi1 the activations' sums times delta (IQ1_DELTA = 1/8): 8 times that is the int
  dot product of 8 grid + delta.
The products d * ls * w are exact in float32 (fp16 d, ls < 32, |w| < 64), so the floats they give are the gguf
package's dequantized values bit for bit, and the integer sums are llama.cpp's.

Each type's decoder gives a sub-block of 32 weights as 64-bit words from tables (grid magnitudes, sign masks; IQ1:
the weights + 9 as unsigned bytes, the 9 taken out once per super-block against the activations' sums per 16). The
integer matvec puts those words into vector registers and dots them with the activations there (lattice_step:
llama.cpp's AVX2 step, sdot on ARM), carrying the int32 lanes from sub-block to sub-block and a row's super-blocks
in float lanes (one horizontal sum a row); a super-block's grid indices (where they are spread over two arrays) and
its 16 scales are built once for all its sub-blocks in vector registers (sb_indices, sb_scales), except where the
integer paths keep the indices as u16 (IQ1_S, IQ1_M, IQ2_XS: EXPANDED_*, 1.2-1.4x the file, 1.3-1.45x faster
decode). Where a type's signs are 7-bit indices (IQ2_XXS, IQ2_XS) the integer paths keep them as 8-bit bytes, which
the matvec spreads to masks in registers; IQ3_XXS and IQ3_S, 16 values each, run as 4-bit codes in IQ4_XS's
layout (blocks16.py; NIB_BOOKS below). The GEMM decodes 16 rows at a time into _gemm.py's TILE order (the weights
+ 128, a float scale d * ls per row and 32 or 16 weights) and multiplies every token by the tile there, as the
other types' GEMMs; the float kernels (CPUs with no integer path) turn the same bytes into floats.
"""
from typing import NamedTuple

import numpy as np
from llvmlite import ir
import numba
from numba import njit, prange, types
from numba.extending import intrinsic, models, overload, register_model

from kvant.formats.blocks import block
from kvant.formats.codecs_iq import (GRID_IQ1_S, GRID_IQ2_S, GRID_IQ2_XS, GRID_IQ2_XXS, GRID_IQ3_S, GRID_IQ3_XXS,
                                     KSIGNS)

from ._common import F32, dot, float_matmul
from ._gemm import ROWS, _offsets, half_offsets, spread_codes, tiles
from ._vnni16 import BOOK_TAGS, CODEBOOKS
from .blocks16 import GROUP, xs16_layout, xs16_planes
from .lattice_tiles import TILE_SPECS, TileSpec, lattice_tile
from ._ir import f16_to_f32, load_u16 as u16, load_u32 as u32
from ._isa import _V8I32, _V32I8, FAST, sign_dot32
from ._vnni import _F32, _I8, _I32, _as_i64, _data, _declare, _is_arr, _splat, _vec_load
from .actquant import q8_k, q8_k_codes
from .intdot import code_sums, int_note
from .registry import Layout, register

IQ2XXS, IQ2XS, IQ2S, IQ3XXS, IQ3S, IQ1S, IQ1M = (block(name) for name in (
    "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"))

U64 = np.uint64
_BIAS = U64(0x8080808080808080)


def _words(values) -> np.ndarray:
    """Rows of up to 8 small values (0..255) as little-endian 64-bit words, one per row."""
    b = np.zeros((len(values), 8), np.uint8)
    b[:, :values.shape[1]] = values
    return b.view(np.uint64)[:, 0].copy()


def _masks(bits: np.ndarray) -> np.ndarray:
    """Each byte of bits as 8 bytes of 0xFF (its bit set: negative) or 0."""
    return _words(((bits[:, None] >> np.arange(8)) & 1).astype(np.uint8) * 255)


# The IQ1 weights 8 g + delta (-9..9) kept as unsigned bytes + 9: vpmaddubsw takes them as they are (no vpsignb and
# vpabsb per 32 weights), and the 9 comes out once per super-block as 9 * sum(scale * activation sums per 16)
IQ1_OFFSET = 9


def _iq1_words():
    """The IQ1 weights 8 g + delta + IQ1_OFFSET (g in -1, 0, 1): index idx for delta +1, 2048 + idx for -1."""
    g = GRID_IQ1_S.astype(np.int64)
    return _words(np.concatenate([8 * g + 1, 8 * g - 1]) + IQ1_OFFSET)


MAG_IQ2_XXS, MAG_IQ2_XS, MAG_IQ2_S = (_words(g.astype(np.uint8)) for g in (GRID_IQ2_XXS, GRID_IQ2_XS, GRID_IQ2_S))
MAG_IQ3_XXS, MAG_IQ3_S = (_words(g.astype(np.uint8)) for g in (GRID_IQ3_XXS, GRID_IQ3_S))
SIGNS7 = _masks(KSIGNS)                                     # a 7-bit sign index (ksigns: 8th bit = parity)
SIGNS8 = _masks(np.arange(256, dtype=np.uint16))           # a byte of sign bits
IQ1_WORDS = _iq1_words()


@njit(cache=True, inline="always")
def _signed(mag, mask):
    """8 magnitudes (< 128) with their signs, + 128 each (no carry or borrow crosses a byte)."""
    return ((_BIAS + mag) & ~mask) | ((_BIAS - mag) & mask)


@njit(cache=True, inline="always")
def _nibble_ls(byte):
    """The odd scales 2 s + 1 of a byte's two 4-bit scales s, low nibble first."""
    return 2 * (np.int64(byte) & 15) + 1, 2 * (np.int64(byte) >> 4) + 1


# Each type's sub-block decoder: the 32 weights ib of the super-block at byte s as four words of magnitudes g (8
# bytes < 128 each), four words of sign masks m (0xFF: negative) and the odd scales of its two 16-weight halves.
# IQ1's weights (odd, |w| <= 9) come as unsigned bytes w + IQ1_OFFSET instead, the same four words as g and m
# (Kind.word_offset).

@njit(cache=True, inline="always")
def _iq2_xxs(src, s, ib, idx):
    """d, then 8 x (4 grid-index bytes, u32: 4 x 7 sign bits + a 4-bit scale)."""
    p = s + IQ2XXS.qs + 8 * ib
    aux = u32(src, p + 4)
    ls = 2 * np.int64(aux >> 28) + 1
    return (MAG_IQ2_XXS[src[p]], MAG_IQ2_XXS[src[p + 1]], MAG_IQ2_XXS[src[p + 2]], MAG_IQ2_XXS[src[p + 3]],
            SIGNS7[aux & 127], SIGNS7[(aux >> 7) & 127], SIGNS7[(aux >> 14) & 127], SIGNS7[(aux >> 21) & 127],
            ls, ls)


@njit(cache=True, inline="always")
def _iq2_xxs_signs(src, s, ib, idx):
    """IQ2_XXS as the integer kernels keep it (_expand_signs): d, 8 x (4 grid-index bytes, 4 sign bytes: the
    file's 7 sign bits each with their parity bit), the 4-bit scales as nibbles at 66."""
    p = s + 2 + 8 * ib
    ls = 2 * ((np.int64(src[s + 66 + (ib >> 1)]) >> (4 * (ib & 1))) & 15) + 1
    return (MAG_IQ2_XXS[src[p]], MAG_IQ2_XXS[src[p + 1]], MAG_IQ2_XXS[src[p + 2]], MAG_IQ2_XXS[src[p + 3]],
            SIGNS8[src[p + 4]], SIGNS8[src[p + 5]], SIGNS8[src[p + 6]], SIGNS8[src[p + 7]], ls, ls)


@njit(cache=True, inline="always")
def _iq2_xs_split(src, s, ib, idx):
    """IQ2_XS as the integer kernels keep it (_split_xs): d, the 9-bit grid indices as u16 [32] at 2, their sign
    bytes [32] at 66 (7 bits and parity), the scales [8] at 98 as the file has them."""
    p = s + 2 + 8 * ib
    q = s + 66 + 4 * ib
    lo, hi = _nibble_ls(src[s + 98 + ib])
    return (MAG_IQ2_XS[u16(src, p)], MAG_IQ2_XS[u16(src, p + 2)], MAG_IQ2_XS[u16(src, p + 4)],
            MAG_IQ2_XS[u16(src, p + 6)], SIGNS8[src[q]], SIGNS8[src[q + 1]], SIGNS8[src[q + 2]], SIGNS8[src[q + 3]],
            lo, hi)


@njit(cache=True, inline="always")
def _iq2_xs_pair(src, p):
    v = u16(src, p)
    return MAG_IQ2_XS[v & 511], SIGNS7[v >> 9]


@njit(cache=True, inline="always")
def _iq2_xs(src, s, ib, idx):
    """d, u16 qs[32] (a 9-bit grid index, a 7-bit sign index), 4-bit scales[16] (one per 16)."""
    p = s + IQ2XS.qs + 8 * ib
    g0, m0 = _iq2_xs_pair(src, p)
    g1, m1 = _iq2_xs_pair(src, p + 2)
    g2, m2 = _iq2_xs_pair(src, p + 4)
    g3, m3 = _iq2_xs_pair(src, p + 6)
    lo, hi = _nibble_ls(src[s + IQ2XS.scales + ib])
    return g0, g1, g2, g3, m0, m1, m2, m3, lo, hi


@njit(cache=True, inline="always")
def _iq2_s(src, s, ib, idx):
    """d, qs[32] (low 8 index bits), signs[32], qh[8] (2 more index bits each), 4-bit scales[16]; the 10-bit
    indices from sb_indices."""
    p = s + IQ2S.signs + 4 * ib
    i = 4 * ib
    lo, hi = _nibble_ls(src[s + IQ2S.scales + ib])
    return (MAG_IQ2_S[idx[i]], MAG_IQ2_S[idx[i + 1]], MAG_IQ2_S[idx[i + 2]], MAG_IQ2_S[idx[i + 3]],
            SIGNS8[src[p]], SIGNS8[src[p + 1]], SIGNS8[src[p + 2]], SIGNS8[src[p + 3]], lo, hi)


@njit(cache=True, inline="always")
def _iq3_xxs_mag(src, p):
    return MAG_IQ3_XXS[src[p]] | (MAG_IQ3_XXS[src[p + 1]] << U64(32))


@njit(cache=True, inline="always")
def _iq3_xxs(src, s, ib, idx):
    """d, qs[64] (grid indices of 4 values), 8 x u32 (4 x 7 sign bits + a 4-bit scale)."""
    aux = u32(src, s + IQ3XXS.sas + 4 * ib)
    ls = 2 * np.int64(aux >> 28) + 1
    p = s + IQ3XXS.qs + 8 * ib
    return (_iq3_xxs_mag(src, p), _iq3_xxs_mag(src, p + 2), _iq3_xxs_mag(src, p + 4), _iq3_xxs_mag(src, p + 6),
            SIGNS7[aux & 127], SIGNS7[(aux >> 7) & 127], SIGNS7[(aux >> 14) & 127], SIGNS7[(aux >> 21) & 127],
            ls, ls)


@njit(cache=True, inline="always")
def _iq3_s_mag(src, s, ib, l, qh):
    e = 8 * ib + 2 * l
    lo = MAG_IQ3_S[np.int64(src[s + IQ3S.qs + e]) | (((qh >> (2 * l)) & 1) << 8)]
    return lo | (MAG_IQ3_S[np.int64(src[s + IQ3S.qs + 1 + e]) | (((qh >> (2 * l + 1)) & 1) << 8)] << U64(32))


@njit(cache=True, inline="always")
def _iq3_s(src, s, ib, idx):
    """d, qs[64] (low 8 index bits), qh[8] (a 9th bit each), signs[32], 4-bit scales[8] (one per 32)."""
    qh = np.int64(src[s + IQ3S.qh + ib])
    p = s + IQ3S.signs + 4 * ib
    ls = 2 * ((np.int64(src[s + IQ3S.scales + (ib >> 1)]) >> (4 * (ib & 1))) & 15) + 1
    return (_iq3_s_mag(src, s, ib, 0, qh), _iq3_s_mag(src, s, ib, 1, qh), _iq3_s_mag(src, s, ib, 2, qh),
            _iq3_s_mag(src, s, ib, 3, qh), SIGNS8[src[p]], SIGNS8[src[p + 1]], SIGNS8[src[p + 2]],
            SIGNS8[src[p + 3]], ls, ls)


@njit(cache=True, inline="always")
def _iq1_s(src, s, ib, idx):
    """d, qs[32] (low 8 index bits), u16 qh[8] (3 more index bits per 8 values, a 3-bit scale, the delta's sign);
    the IQ1_WORDS indices from sb_indices."""
    i = 4 * ib
    w0, w1, w2, w3 = IQ1_WORDS[idx[i]], IQ1_WORDS[idx[i + 1]], IQ1_WORDS[idx[i + 2]], IQ1_WORDS[idx[i + 3]]
    ls = 2 * ((np.int64(u16(src, s + IQ1S.qh + 2 * ib)) >> 12) & 7) + 1
    return w0, w1, w2, w3, w0, w1, w2, w3, ls, ls


@njit(cache=True, inline="always")
def _iq1_m(src, s, ib, idx):
    """qs[32] (low 8 index bits), qh[16] (per 8 values: 3 more index bits and the delta's sign), u16 scales[4]
    (3-bit scales per 16 values; fp16 d in their top nibbles); the IQ1_WORDS indices from sb_indices."""
    i = 4 * ib
    w0, w1, w2, w3 = IQ1_WORDS[idx[i]], IQ1_WORDS[idx[i + 1]], IQ1_WORDS[idx[i + 2]], IQ1_WORDS[idx[i + 3]]
    sc = np.int64(u16(src, s + IQ1M.scales + 2 * (ib >> 1))) >> (6 * (ib & 1))
    return w0, w1, w2, w3, w0, w1, w2, w3, 2 * (sc & 7) + 1, 2 * ((sc >> 3) & 7) + 1


@njit(cache=True, inline="always")
def _iq1_indexed(src, p):
    """The four IQ1_WORDS of the u16 indices at byte p (EXPANDED_IQ1_*: sb_indices' 12-bit indices kept in the
    layout, IQ1_S's scales in the top bits of some)."""
    return (IQ1_WORDS[u16(src, p) & 4095], IQ1_WORDS[u16(src, p + 2) & 4095], IQ1_WORDS[u16(src, p + 4) & 4095],
            IQ1_WORDS[u16(src, p + 6) & 4095])


@njit(cache=True, inline="always")
def _iq1_s_indexed(src, s, ib, idx):
    """IQ1_S as EXPANDED_IQ1_S keeps it: d, u16 indices[32] at 2, each 4th one's bits 12-14 the sub-block's 3-bit
    scale (the file's qh bits 12-14)."""
    p = s + 2 + 8 * ib
    w0, w1, w2, w3 = _iq1_indexed(src, p)
    ls = 2 * ((np.int64(u16(src, p)) >> 12) & 7) + 1
    return w0, w1, w2, w3, w0, w1, w2, w3, ls, ls


@njit(cache=True, inline="always")
def _iq1_m_indexed(src, s, ib, idx):
    """IQ1_M as EXPANDED_IQ1_M keeps it: fp16 d, u16 indices[32] at 2, the 1st and 3rd of each four with the 3-bit
    scales of their sub-block's halves in bits 12-14."""
    p = s + 2 + 8 * ib
    w0, w1, w2, w3 = _iq1_indexed(src, p)
    return (w0, w1, w2, w3, w0, w1, w2, w3, 2 * ((np.int64(u16(src, p)) >> 12) & 7) + 1,
            2 * ((np.int64(u16(src, p + 4)) >> 12) & 7) + 1)


@njit(cache=True, inline="always")
def _d_eighth(src, s):
    return f16_to_f32(u16(src, s)) * F32(0.125)


@njit(cache=True, inline="always")
def _d_quarter(src, s):
    return f16_to_f32(u16(src, s)) * F32(0.25)


@njit(cache=True, inline="always")
def _d_whole(src, s):
    return f16_to_f32(u16(src, s))


@njit(cache=True, inline="always")
def _d_iq1_m(src, s):
    p = s + IQ1M.scales
    d = ((u16(src, p) >> 12) | ((u16(src, p + 2) >> 8) & 0xF0) | ((u16(src, p + 4) >> 4) & 0xF00)
         | (u16(src, p + 6) & 0xF000))
    return f16_to_f32(d) * F32(0.125)


# The grid indices of a whole super-block at once, in vector registers (sb_indices): index building from bits spread
# over two arrays took a third of the lattice types' decode when done per 8 weights in scalar code.

_V8F = ir.VectorType(_F32, 8)


def _v(n, bits):
    return ir.VectorType(ir.IntType(bits), n)


def _const_lanes(values, bits=32):
    return ir.Constant(_v(len(values), bits), list(values))


class BitFields(NamedTuple):
    """Small fields packed in `count` words of `bits` bits at byte `at` of a super-block: lane k of extract() is
    word words[k] shifted right by shifts[k], and mask (one lane per 8-weight group, or per 16-weight scale)."""
    at: int
    count: int
    bits: int
    words: tuple
    shifts: tuple
    mask: int

    def extract(self, b, p):
        """The fields as <len(words) x i32>."""
        n = len(self.words)
        raw = b.zext(_vec_load(b, p, ir.Constant(ir.IntType(64), self.at), _v(self.count, self.bits)),
                     _v(self.count, 32))
        spread = b.shuffle_vector(raw, raw, _const_lanes(self.words))
        return b.and_(b.lshr(spread, _const_lanes(self.shifts)), _const_lanes([self.mask] * n))


def _per_group(at, bits, width, mask, per_word=4, shift=None):
    """BitFields of the 32 groups of 8 weights: group k's field in word k // per_word at bit width (k % per_word)
    (or at bit shift, the same for every group of a word)."""
    return BitFields(at, 32 // per_word, bits, tuple(k // per_word for k in range(32)),
                     tuple(width * (k % per_word) if shift is None else shift for k in range(32)), mask)


def _grid_indices(qs_at, *high):
    """The builder of 32 indices: the qs byte of group k (at qs_at + k) | each (BitFields, bit position) of high."""
    def build(b, p):
        idx = b.zext(_vec_load(b, p, ir.Constant(ir.IntType(64), qs_at), _v(32, 8)), _v(32, 32))
        for fields, position in high:
            idx = b.or_(idx, b.shl(fields.extract(b, p), _const_lanes([position] * 32)))
        return b.trunc(idx, _v(32, 16))
    return build


# qs[32], and: IQ2_S qh[8], 2 more index bits per 8 weights; IQ1_S u16 qh[8], 3 more bits per 8 weights and the
# delta's sign (qh's top bit: IQ1_WORDS' bit 11); IQ1_M qh[16], a nibble per 8 weights (low first): 3 index bits and
# the delta's sign
_iq2_s_indices = _grid_indices(IQ2S.qs, (_per_group(IQ2S.qh, 8, 2, 3), 8))
_iq1_s_indices = _grid_indices(IQ1S.qs, (_per_group(IQ1S.qh, 16, 3, 7), 8),
                               (_per_group(IQ1S.qh, 16, 0, 1, shift=15), 11))
_iq1_m_indices = _grid_indices(IQ1M.qs, (_per_group(IQ1M.qh, 8, 4, 15, per_word=2), 8))


# Where each type keeps its 4- or 3-bit scales s (the weights' scale 2 s + 1): BitFields of the 16 groups of 16
_PER_32 = tuple(k // 2 for k in range(16))                  # a word per sub-block of 32 weights
_NIBBLE_PAIRS = tuple(4 * (k % 2) for k in range(16))        # a byte per 32 weights: low nibble first
SCALES = {
    "IQ2_XXS": BitFields(IQ2XXS.qs, 16, 32, tuple(2 * (k // 2) + 1 for k in range(16)), (28,) * 16, 15),  # aux
    "IQ2_XS": BitFields(IQ2XS.scales, 8, 8, _PER_32, _NIBBLE_PAIRS, 15),
    "IQ2_S": BitFields(IQ2S.scales, 8, 8, _PER_32, _NIBBLE_PAIRS, 15),
    "IQ3_XXS": BitFields(IQ3XXS.sas, 8, 32, _PER_32, (28,) * 16, 15),
    "IQ3_S": BitFields(IQ3S.scales, 4, 8, tuple(k // 4 for k in range(16)),
                       tuple(4 * ((k // 2) % 2) for k in range(16)), 15),
    "IQ1_S": BitFields(IQ1S.qh, 8, 16, _PER_32, (12,) * 16, 7),
    "IQ1_M": BitFields(IQ1M.scales, 4, 16, tuple(k // 4 for k in range(16)), tuple(3 * (k % 4) for k in range(16)),
                       7),
}


def _super_block_writer(name, produce, doc):
    """An intrinsic name(tag, src, s, out): out (uint16) = produce(kind, builder, p), a vector built from the
    super-block at byte s of src (p its i8 pointer) for the tag's kind, or nothing where produce gives None."""
    def typer(typingctx, tag, src, s, out):
        ok = (isinstance(tag, types.Array) and str(tag.dtype) in _BY_TAG and _is_arr(src, types.uint8)
              and isinstance(s, types.Integer) and _is_arr(out, types.uint16))
        if not ok:
            return None
        kind = _BY_TAG[str(tag.dtype)]

        def codegen(context, builder, signature, args):
            sig = signature.args
            p = builder.gep(_data(context, builder, sig[1], args[1], _I8), [_as_i64(builder, args[2])])
            value = produce(kind, builder, p)
            if value is not None:
                dst = _data(context, builder, sig[3], args[3], ir.IntType(16))
                builder.store(value, builder.bitcast(dst, value.type.as_pointer()), align=1)
            return context.get_dummy_value()
        return types.void(tag, src, s, out), codegen
    typer.__name__, typer.__doc__ = name, doc
    return intrinsic(typer)


def _spread_scales(kind, b, p):
    s = kind.scales.extract(b, p)
    ls = b.trunc(b.add(b.shl(s, _const_lanes([1] * 16)), _const_lanes([1] * 16)), _v(16, 16))
    per16 = list(range(16)) if kind.word_offset else []
    return b.shuffle_vector(ls, ls, _const_lanes([2 * (k // 16) + (k % 16) // 8 for k in range(128)] + per16))


sb_scales = _super_block_writer("sb_scales", _spread_scales, """sb_scales(tag, src, s, sv): sv[16 ib + k] = the
    scale of sub-block ib's weights 2 k, 2 k + 1 (lattice_step's operand), for the super-block at byte s of src;
    where the type's words carry an offset, also sv[128 + k] = the scale of weights 16 k.. 16 k + 15 (offset_term's
    operand).""")
sb_indices = _super_block_writer(
    "sb_indices", lambda kind, b, p: kind.indices(b, p) if kind.indices is not None else None,
    """sb_indices(tag, src, s, idx): idx[0:32] = the grid indices of the super-block at byte s of src, for the types
    that build them (Kind.indices; nothing for the others).""")


class Kind(NamedTuple):
    """One type: its sub-block decoder and dscale, its block bytes, the dtype of its tag, the offset its decoder's
    words carry where they are unsigned weights + word_offset (no sign masks), whether it scales per 16 weights,
    how its grid indices are built a super-block at a time (an IR builder(builder, pointer) -> <32 x i16>, or None:
    the decoder reads them from the bytes as they are), where its scales are (BitFields), and where the file keeps
    a byte of sign bits per 8 weights (sub-block ib's four at sign_bytes[0] + sign_bytes[1] * ib: the matvec
    spreads them to masks in registers). A matrix carries an empty tag array of its type's dtype: the kernels
    compile once per dtype, and sub32 / dscale / block_bytes / lattice_step pick the type's code at compile time
    (with the type a run-time value, all seven decoders behind a branch in one loop ran 1.5x slower)."""
    decoder: object
    dscale: object
    block_bytes: int
    tag: type
    word_offset: int = 0
    scale_per16: bool = False
    indices: object = None
    scales: object = None
    sign_bytes: object = None


KINDS = {"IQ2_XXS": Kind(_iq2_xxs, _d_eighth, IQ2XXS.size, np.int8),
         "IQ2_XS": Kind(_iq2_xs, _d_eighth, IQ2XS.size, np.uint8, scale_per16=True),
         "IQ2_S": Kind(_iq2_s, _d_eighth, IQ2S.size, np.int16, scale_per16=True, indices=_iq2_s_indices,
                       sign_bytes=(IQ2S.signs, 4)),
         "IQ3_XXS": Kind(_iq3_xxs, _d_quarter, IQ3XXS.size, np.uint16),
         "IQ3_S": Kind(_iq3_s, _d_whole, IQ3S.size, np.int32),
         "IQ1_S": Kind(_iq1_s, _d_eighth, IQ1S.size, np.uint32, word_offset=IQ1_OFFSET, indices=_iq1_s_indices),
         "IQ1_M": Kind(_iq1_m, _d_iq1_m, IQ1M.size, np.int64, word_offset=IQ1_OFFSET, scale_per16=True,
                       indices=_iq1_m_indices)}
KINDS = {name: kind._replace(scales=SCALES[name]) for name, kind in KINDS.items()}
# The file's layouts the integer matvec reads another way: IQ2_XXS with 8-bit signs (4 bytes more a super-block, 6%:
# the signs spread to masks in registers, where the 7-bit ones took a table load per 8 weights)
EXPANDED_SIGNS = Kind(_iq2_xxs_signs, _d_eighth, 70, np.uint64, sign_bytes=(6, 8),
                      scales=BitFields(66, 4, 8, tuple(k // 4 for k in range(16)),
                                       tuple(4 * ((k // 2) % 2) for k in range(16)), 15))
# IQ2_XS the same way (106 bytes, the file 74): its u16 of a 9-bit grid index and 7 sign bits per 8 weights split
# into the index as a u16 (no sb_indices: see EXPANDED_IQ1_* below) and a sign byte
EXPANDED_XS = Kind(_iq2_xs_split, _d_eighth, 106, np.float32, scale_per16=True, sign_bytes=(66, 4),
                   scales=BitFields(98, 8, 8, _PER_32, _NIBBLE_PAIRS, 15))
_SIGNS_BYTES, _XS_BYTES = EXPANDED_SIGNS.block_bytes, EXPANDED_XS.block_bytes   # ints the repacks' numba can fold
# IQ1_S and IQ1_M with each 8 weights' 12-bit IQ1_WORDS index (sb_indices') as a u16 (66 bytes, the files 50 and
# 56: these types' decode is bound by instructions, not bytes, and building the indices took a sixth of them;
# decode 1.4x faster)
EXPANDED_IQ1_S = Kind(_iq1_s_indexed, _d_eighth, 66, np.float64, word_offset=IQ1_OFFSET,
                      scales=BitFields(2, 32, 16, tuple(4 * (k // 2) for k in range(16)), (12,) * 16, 7))
EXPANDED_IQ1_M = Kind(_iq1_m_indexed, _d_eighth, 66, np.complex64, word_offset=IQ1_OFFSET, scale_per16=True,
                      scales=BitFields(2, 32, 16, tuple(4 * (k // 2) + 2 * (k % 2) for k in range(16)), (12,) * 16, 7))
_BY_TAG = {str(numba.from_dtype(np.dtype(kind.tag))): kind
           for kind in (*KINDS.values(), EXPANDED_SIGNS, EXPANDED_XS, EXPANDED_IQ1_S, EXPANDED_IQ1_M)}
# the layouts the GEMM's tiles decode in IR (lattice_tiles.py): where their indices and signs are, and the table
_IQ1_TILE = TileSpec(66, 2, 8, True, 4095, word_offset=IQ1_OFFSET)
_IR_TILES = {EXPANDED_IQ1_S: (_IQ1_TILE, IQ1_WORDS), EXPANDED_IQ1_M: (_IQ1_TILE, IQ1_WORDS),
             EXPANDED_XS: (TileSpec(106, 2, 8, True, 511, sign_at=66, sign_step=4), MAG_IQ2_XS),
             EXPANDED_SIGNS: (TileSpec(70, 2, 8, False, 255, sign_at=6, sign_step=8), MAG_IQ2_XXS),
             KINDS["IQ2_S"]: (TileSpec(IQ2S.size, IQ2S.qs, 4, False, 255, sign_at=IQ2S.signs, sign_step=4,
                                       high_at=IQ2S.qh), MAG_IQ2_S)}
TILE_SPECS.update({str(numba.from_dtype(np.dtype(kind.tag))): spec for kind, (spec, _) in _IR_TILES.items()})
_TILE_TABLES = {str(numba.from_dtype(np.dtype(kind.tag))): table for kind, (_, table) in _IR_TILES.items()}


def sub32(tag, src, s, ib, idx):
    """Sub-block ib (32 weights) of the super-block at byte s of a row of the tag's type: (g0..g3, m0..m3, ls_lo,
    ls_hi) as the decoders above, idx the super-block's grid indices where the type builds them (sb_indices).
    Numba-compiled code only (the overloads below)."""
    raise TypeError("sub32 works inside numba-compiled kernels only")


def dscale(tag, src, s):
    """The float factor of the super-block at byte s (numba-compiled code only)."""
    raise TypeError("dscale works inside numba-compiled kernels only")


def block_bytes(tag):
    """The block size in bytes of the tag's type (numba-compiled code only)."""
    raise TypeError("block_bytes works inside numba-compiled kernels only")


@overload(sub32, inline="always")
def _sub32(tag, src, s, ib, idx):
    decoder = _BY_TAG[str(tag.dtype)].decoder
    return lambda tag, src, s, ib, idx: decoder(src, s, ib, idx)


@overload(dscale, inline="always")
def _dscale(tag, src, s):
    factor = _BY_TAG[str(tag.dtype)].dscale
    return lambda tag, src, s: factor(src, s)


@overload(block_bytes, inline="always")
def _block_bytes(tag):
    size = _BY_TAG[str(tag.dtype)].block_bytes
    return lambda tag: size


def halves(tag):
    """2 where the tag's type scales each 16 weights, 1 where each 32 (numba-compiled code only)."""
    raise TypeError("halves works inside numba-compiled kernels only")


@overload(halves, inline="always")
def _halves(tag):
    count = 2 if _BY_TAG[str(tag.dtype)].scale_per16 else 1
    return lambda tag: count


def tile_table(tag):
    """The table words lattice_tile looks the tag's weights up in (numba-compiled code only; every layout the GEMM
    runs has one)."""
    raise TypeError("tile_table works inside numba-compiled kernels only")


@overload(tile_table, inline="always")
def _tile_table(tag):
    table = _TILE_TABLES.get(str(tag.dtype))
    return (lambda tag: table) if table is not None else None


def biased(tag, g, m):
    """A decoder's word pair as 8 weights + 128 (numba-compiled code only)."""
    raise TypeError("biased works inside numba-compiled kernels only")


@overload(biased, inline="always")
def _biased(tag, g, m):
    offset = _BY_TAG[str(tag.dtype)].word_offset
    if offset:      # unsigned weights + offset: each byte + (128 - offset), no carry (the bytes stay below 256)
        rebias = U64(0x0101010101010101 * (128 - offset))
        return lambda tag, g, m: g + rebias
    return lambda tag, g, m: _signed(g, m)


@njit(cache=True, inline="always")
def decode_sb(tag, w, ls, idx, src, s):
    """The super-block at byte s into w (32 words: 256 weights + 128) and ls (16 int32), idx 32 uint16 of scratch;
    returns its dscale."""
    sb_indices(tag, src, s, idx)
    for ib in range(8):
        g0, g1, g2, g3, m0, m1, m2, m3, lo, hi = sub32(tag, src, s, ib, idx)
        w[4 * ib] = biased(tag, g0, m0)
        w[4 * ib + 1] = biased(tag, g1, m1)
        w[4 * ib + 2] = biased(tag, g2, m2)
        w[4 * ib + 3] = biased(tag, g3, m3)
        ls[2 * ib] = lo
        ls[2 * ib + 1] = hi
    return dscale(tag, src, s)


# ---------------------------------------------------------------- the matvec's dot step in registers

class _Lanes(types.Type):
    """8 lanes in a vector register, carried by numba code from one step to the next: int32 (LANES: each
    sub-block's words go from its decoder to the dot step while the decoder of the next one runs) or float32
    (FLOAT_LANES: a row's scaled super-block sums, added up across lanes once per row, not once per super-block)."""
    def __init__(self, name, vector):
        self.vector = vector
        super().__init__(name=name)


LANES = _Lanes("Lanes8xi32", _V8I32)
FLOAT_LANES = _Lanes("Lanes8xf32", _V8F)


@register_model(_Lanes)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, fe_type.vector)


@intrinsic
def no_lanes(typingctx):
    """Zero int32 lanes."""
    return LANES(), lambda context, builder, signature, args: ir.Constant(_V8I32, None)


@intrinsic
def no_float_lanes(typingctx):
    """Zero float32 lanes."""
    return FLOAT_LANES(), lambda context, builder, signature, args: ir.Constant(_V8F, None)


@intrinsic
def scaled_add(typingctx, acc, lanes, scale):
    """acc + lanes (int32, as floats) * scale (a float32 for all lanes): vcvtdq2ps and one fused multiply-add."""
    def codegen(context, builder, signature, args):
        f = builder.sitofp(args[1], _V8F)
        return builder.fadd(args[0], builder.fmul(f, _splat(builder, args[2], _V8F), flags=("contract",)),
                            flags=("contract",))
    return (FLOAT_LANES(acc, lanes, scale), codegen) if (acc == FLOAT_LANES and lanes == LANES
                                                         and scale == types.float32) else None


@intrinsic
def lanes_total(typingctx, lanes):
    """The sum of float32 lanes."""
    def codegen(context, builder, signature, args):
        fsum = _declare(builder.module, "llvm.vector.reduce.fadd.v8f32", _F32, [_F32, _V8F])
        return builder.call(fsum, [ir.Constant(_F32, 0.0), args[0]], fastmath=("reassoc",))
    return (types.float32(lanes), codegen) if lanes == FLOAT_LANES else None


def _lattice_step_codegen(context, builder, signature, args):
    sig = signature.args
    unsigned_words = _BY_TAG[str(sig[1].dtype)].word_offset > 0
    xq_p = _data(context, builder, sig[2], args[2], _I8)
    x = _vec_load(builder, xq_p, _as_i64(builder, args[3]), _V32I8)
    v4 = ir.VectorType(ir.IntType(64), 4)

    def word_vector(words):
        v = ir.Constant(v4, None)
        for k, word in enumerate(words):
            v = builder.insert_element(v, word, ir.Constant(_I32, k))
        return builder.bitcast(v, _V32I8)

    g = word_vector(args[4:8])
    sign_bytes = _BY_TAG[str(sig[1].dtype)].sign_bytes
    if unsigned_words:
        m = g           # unused
    elif sign_bytes is not None:        # the file's sign bytes, spread to masks in registers (the m words unused)
        at = builder.add(builder.add(_as_i64(builder, args[15]), ir.Constant(ir.IntType(64), sign_bytes[0])),
                         builder.mul(_as_i64(builder, args[13]), ir.Constant(ir.IntType(64), sign_bytes[1])))
        m = _sign_masks(builder, _vec_load(builder, _data(context, builder, sig[14], args[14], _I8), at, _I32))
    else:
        m = word_vector(args[8:12])
    sv_p = _data(context, builder, sig[12], args[12], ir.IntType(16))
    ls16 = _vec_load(builder, sv_p, builder.mul(_as_i64(builder, args[13]), ir.Constant(ir.IntType(64), 16)),
                     _v(16, 16))
    return builder.add(args[0], sign_dot32(builder, g, m, x, ls16, unsigned_words))


def _sign_masks(builder, bits):
    """32 sign bits (i32) as 32 bytes: 0xFF where the bit is set (vpbroadcastd, vpshufb, vpand, vpcmpeqb)."""
    spread = builder.shuffle_vector(builder.bitcast(_splat(builder, bits, _V8I32), _V32I8), ir.Constant(_V32I8, None),
                                    _const_lanes([k // 8 for k in range(32)]))
    one_bit = _const_lanes([1 << (k % 8) for k in range(32)], 8)
    return builder.sext(builder.icmp_unsigned("==", builder.and_(spread, one_bit), one_bit), _V32I8)


@intrinsic
def lattice_step(typingctx, lanes, tag, xq, xo, g0, g1, g2, g3, m0, m1, m2, m3, sv, ib, src, s):
    """lanes + the products of 32 weights (sub-block ib of the super-block at byte s of src) and xq[xo:xo + 32],
    the two 16-weight halves times their scales, sv[16 ib: 16 ib + 16] (sb_scales): the weights as four words of
    magnitudes g and four of sign masks m (or the file's sign bytes: Kind.sign_bytes), or as unsigned weights +
    an offset (Kind.word_offset: offset_term takes it out), a sub32 decoder's output, put into vectors in registers
    (vmovq, vpunpcklqdq, vinserti128) as llama.cpp's AVX2 code does; scaled_add takes them to float lanes."""
    words = (g0, g1, g2, g3, m0, m1, m2, m3)
    ok = (lanes == LANES and isinstance(tag, types.Array) and str(tag.dtype) in _BY_TAG
          and _is_arr(xq, types.int8) and isinstance(xo, types.Integer) and all(w == types.uint64 for w in words)
          and _is_arr(sv, types.uint16) and isinstance(ib, types.Integer) and _is_arr(src, types.uint8)
          and isinstance(s, types.Integer))
    return (LANES(lanes, tag, xq, xo, *words, sv, ib, src, s), _lattice_step_codegen) if ok else None


def _offset_term_codegen(context, builder, signature, args):
    sig = signature.args
    offset = _BY_TAG[str(sig[1].dtype)].word_offset
    if not offset:
        return args[0]
    v16 = _v(16, 16)
    sums = _vec_load(builder, _data(context, builder, sig[2], args[2], ir.IntType(16)),
                     builder.mul(_as_i64(builder, args[3]), ir.Constant(ir.IntType(64), 16)), v16)
    ls = _vec_load(builder, _data(context, builder, sig[4], args[4], ir.IntType(16)),
                   ir.Constant(ir.IntType(64), 128), v16)
    products = builder.mul(builder.sext(ls, _v(16, 32)), builder.sext(sums, _v(16, 32)))
    pairs = builder.add(builder.shuffle_vector(products, products, _const_lanes(range(0, 16, 2))),
                        builder.shuffle_vector(products, products, _const_lanes(range(1, 16, 2))))   # vpmaddwd
    return builder.sub(args[0], builder.mul(pairs, _const_lanes([offset] * 8)))


@intrinsic
def offset_term(typingctx, lanes, tag, xb, b, sv):
    """lanes - offset * sum_k ls[k] xb[16 b + k] for a type whose words are its weights + an offset
    (Kind.word_offset): xb the activation codes' sums per 16 (int16), ls the super-block's scales per 16 at
    sv[128:144] (sb_scales). The lanes as they are for the other types."""
    ok = (lanes == LANES and isinstance(tag, types.Array) and str(tag.dtype) in _BY_TAG
          and _is_arr(xb, types.int16) and isinstance(b, types.Integer) and _is_arr(sv, types.uint16))
    return (LANES(lanes, tag, xb, b, sv), _offset_term_codegen) if ok else None


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_int(out, x, raw, tag, xq, xd, xb):
    """Decode: each sub-block's table words go from the decoder to the dot step in registers."""
    q8_k_codes(xq, xd, x)
    code_sums(xb, xq)
    bsize = block_bytes(tag)
    rows, nsb = raw.shape[0], raw.shape[1] // bsize
    nt = min(rows, 64)
    for c in prange(nt):
        idx = np.empty(32, np.uint16)
        sv = np.empty(144, np.uint16)
        for r in range(rows * c // nt, rows * (c + 1) // nt):
            src = raw[r]
            acc = no_float_lanes()
            for b in range(nsb):
                s = b * bsize
                sb_indices(tag, src, s, idx)
                sb_scales(tag, src, s, sv)
                lanes = no_lanes()
                for ib in range(8):
                    g0, g1, g2, g3, m0, m1, m2, m3, _, _ = sub32(tag, src, s, ib, idx)
                    lanes = lattice_step(lanes, tag, xq, 256 * b + 32 * ib, g0, g1, g2, g3, m0, m1, m2, m3, sv, ib,
                                         src, s)
                lanes = offset_term(lanes, tag, xb, b, sv)
                acc = scaled_add(acc, lanes, dscale(tag, src, s) * xd[8 * b])
            out[r] = lanes_total(acc)


@njit(cache=True, fastmath=FAST)
def _tile(wt, ws, wm, r0, raw, tag):
    """Rows r0..r0+15 (past the end: the last row again) into _gemm's TILE order: wt the weights + 128 (lattice_tile,
    in IR), ws the float scale dscale * ls of each row's 32-block, or of each 16-weight half (halves(tag) == 2: the
    first halves' 16 rows, then the second ones')."""
    bsize = block_bytes(tag)
    per16 = halves(tag) == 2
    last = raw.shape[0] - 1
    lattice_tile(wt, raw, r0, raw.shape[1] // bsize, tile_table(tag), tag)
    idx = np.zeros(32, np.uint16)     # sub32 gives the scales here; its grid words (unused) index by idx unbuilt
    for j in range(ROWS):
        src = raw[min(r0 + j, last)]
        for b in range(raw.shape[1] // bsize):
            s = b * bsize
            d = dscale(tag, src, s)
            for ib in range(8):
                _, _, _, _, _, _, _, _, lo, hi = sub32(tag, src, s, ib, idx)
                blk = 8 * b + ib
                if per16:
                    ws[32 * blk + j] = d * F32(lo)
                    ws[32 * blk + 16 + j] = d * F32(hi)
                else:
                    ws[16 * blk + j] = d * F32(lo)


@njit(cache=True, parallel=True)
def _gemm(out, xq, xd, xs, xm, raw, tag):
    """Prefill: 16-row tiles decoded once into _gemm's TILE order, every token multiplied by each (tile_gemm_wide,
    TOK tokens a load of the weights; tile_gemm_wide16 where the scales are per 16)."""
    if halves(tag) == 2:
        tiles(out, xq, xd, half_offsets(xq, 128), xm, False, True, _tile, (raw, tag), 2, True)
    else:
        tiles(out, xq, xd, _offsets(xs, 128), xm, False, True, _tile, (raw, tag), 1, True)


gemm = spread_codes(_gemm)


# ---------------------------------------------------------------- floats (CPUs with no integer path)

@njit(cache=True, fastmath=FAST)
def decode_row(dst, r, raw, tag):
    """Row r as floats, the gguf package's values exactly (the module's docstring says why)."""
    bsize = block_bytes(tag)
    w = np.empty(32, np.uint64)
    ls = np.empty(16, np.int32)
    idx = np.empty(32, np.uint16)
    w8 = w.view(np.uint8)
    src = raw[r]
    for b in range(raw.shape[1] // bsize):
        dscale = decode_sb(tag, w, ls, idx, src, b * bsize)
        for j in range(256):
            dst[256 * b + j] = dscale * F32(ls[j >> 4]) * F32(np.int32(w8[j]) - 128)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_float(out, x, raw, tag):
    rows = out.shape[0]
    nt = min(rows, 64)
    for c in prange(nt):
        row = np.empty(x.shape[0], np.float32)
        for r in range(rows * c // nt, rows * (c + 1) // nt):
            decode_row(row, r, raw, tag)
            out[r] = dot(row, x)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_float(out, x, raw, tag):
    float_matmul(out, x, decode_row, (raw, tag))


def _no_scratch(cols):
    return ()


# The IQ3 types' weights are 16 values (8 grid magnitudes, either sign): where the CPU has an integer path they are
# repacked to 4-bit codes in IQ4_XS's 16-row layout (blocks16.py), whose decode is a vpshufb per 32 bytes instead of
# a table load per 4 or 8 weights: 4.25 bits a weight (IQ3_S: 1.24x its file's bytes, IQ3_XXS: 1.39x).
NIB_BOOKS = {"IQ3_S": 2, "IQ3_XXS": 3}          # name -> _vnni16.CODEBOOKS number


@njit(cache=True, parallel=True)
def _repack_nib(raw, tag, q, sc, d, code_of):
    """Each super-block's weights as codes (code_of[weight + 128]) in NIB16 order (q[g, 8 s + b], byte i of a
    row's block: element i low, 16 + i high), its scales ls per 32 at sc[g, s, 16 b + r], its fp16 d bits."""
    bsize = block_bytes(tag)
    rows, nsb = raw.shape[0], d.shape[1]
    for g in prange(q.shape[0]):
        w = np.empty(32, np.uint64)
        ls = np.empty(16, np.int32)
        idx = np.empty(32, np.uint16)
        w8 = w.view(np.uint8)
        for r in range(min(GROUP, rows - GROUP * g)):
            src = raw[GROUP * g + r]
            for s in range(nsb):
                o = bsize * s
                decode_sb(tag, w, ls, idx, src, o)
                d[g, s, r] = u16(src, o)
                for b in range(8):
                    sc[g, s, 16 * b + r] = ls[2 * b]
                    for i in range(16):
                        code = code_of[w8[32 * b + i]] | (code_of[w8[32 * b + 16 + i]] << 4)
                        q[g, 8 * s + b, 64 * (i >> 2) + 4 * r + (i & 3)] = code


def _repack_to_nibbles(name):
    tag = np.empty(0, KINDS[name].tag)
    number = NIB_BOOKS[name]
    code_of = np.zeros(256, np.uint8)
    for code, value in enumerate(CODEBOOKS[number][0]):
        code_of[(value + 128) & 255] = code
    book = np.empty(0, BOOK_TAGS[number])

    def repack(raw, cols):
        q, sc, d = xs16_planes(raw, cols)
        _repack_nib(raw, tag, q, sc, d, code_of)
        return q, sc, d, book
    return repack


def _codes_scratch(cols):
    """The matvec's Q8_K codes, their scale per 32 and their sums per 16 (offset_term's)."""
    return np.empty(cols, np.int8), np.empty(cols // 32, np.float32), np.empty(cols // 16, np.int16)


def _repack(name):
    """The file's rows as they are, with the type's tag."""
    tag = np.empty(0, KINDS[name].tag)
    return lambda raw, cols: (raw, tag)


@njit(cache=True, parallel=True)
def _expand_signs(raw, out):
    """IQ2_XXS rows into EXPANDED_SIGNS' layout (out zeroed): each 7-bit sign index as its 8 sign bits (KSIGNS),
    the scale nibbles gathered at 66."""
    nsb = raw.shape[1] // IQ2XXS.size
    for r in prange(raw.shape[0]):
        src, dst = raw[r], out[r]
        for b in range(nsb):
            s, o = IQ2XXS.size * b, _SIGNS_BYTES * b
            dst[o], dst[o + 1] = src[s + IQ2XXS.d], src[s + IQ2XXS.d + 1]
            for ib in range(8):
                p, q = s + IQ2XXS.qs + 8 * ib, o + 2 + 8 * ib
                aux = np.int64(u32(src, p + 4))
                for k in range(4):
                    dst[q + k] = src[p + k]
                    dst[q + 4 + k] = KSIGNS[(aux >> (7 * k)) & 127]
                dst[o + 66 + (ib >> 1)] |= np.uint8((aux >> 28) << (4 * (ib & 1)))


@njit(cache=True, parallel=True)
def _split_xs(raw, out):
    """IQ2_XS rows into EXPANDED_XS' layout."""
    nsb = raw.shape[1] // IQ2XS.size
    for r in prange(raw.shape[0]):
        src, dst = raw[r], out[r]
        for b in range(nsb):
            s, o = IQ2XS.size * b, _XS_BYTES * b
            dst[o], dst[o + 1] = src[s + IQ2XS.d], src[s + IQ2XS.d + 1]
            for k in range(32):
                v = np.int64(u16(src, s + IQ2XS.qs + 2 * k))
                dst[o + 2 + 2 * k] = v & 255
                dst[o + 3 + 2 * k] = (v >> 8) & 1
                dst[o + 66 + k] = KSIGNS[v >> 9]
            for k in range(8):
                dst[o + 98 + k] = src[s + IQ2XS.scales + k]


def _repack_with(kind, expand):
    """raw rows into kind's layout by expand(raw, out)."""
    def repack(raw, cols):
        out = np.zeros((raw.shape[0], cols // 256 * kind.block_bytes), np.uint8)
        expand(raw, out)
        return out, np.empty(0, kind.tag)
    return repack


def _iq1_indices(qs, high3, minus):
    """IQ1 grid indices as sb_indices builds them: qs | 3 more bits << 8 | the delta's sign << 11 (all uint16)."""
    return qs.astype(np.uint16) | (high3.astype(np.uint16) << 8) | (minus.astype(np.uint16) << 11)


def _index_iq1_s(raw, out):
    blocks, dst = raw.reshape(raw.shape[0], -1, IQ1S.size), out.reshape(raw.shape[0], -1, 66)
    qh = blocks[:, :, IQ1S.qh:IQ1S.size].copy().view(np.uint16)             # (rows, nsb, 8)
    per8 = np.repeat(qh, 4, axis=2)                                         # group k: qh[k // 4]
    shift = (3 * (np.arange(32) % 4)).astype(np.uint16)
    idx = _iq1_indices(blocks[:, :, IQ1S.qs:IQ1S.qh], (per8 >> shift) & 7, per8 >> 15)
    idx[:, :, ::4] |= qh & 0x7000                                           # the scales
    dst[:, :, 0:2] = blocks[:, :, IQ1S.d:IQ1S.d + 2]
    dst[:, :, 2:66] = idx.view(np.uint8).reshape(dst.shape[0], dst.shape[1], 64)


def _index_iq1_m(raw, out):
    blocks, dst = raw.reshape(raw.shape[0], -1, IQ1M.size), out.reshape(raw.shape[0], -1, 66)
    nibbles = np.repeat(blocks[:, :, IQ1M.qh:IQ1M.scales], 2, axis=2) >> (4 * (np.arange(32) % 2)).astype(np.uint8)
    idx = _iq1_indices(blocks[:, :, IQ1M.qs:IQ1M.qh], nibbles & 7, (nibbles >> 3) & 1)
    sc = blocks[:, :, IQ1M.scales:IQ1M.size].copy().view(np.uint16)        # (rows, nsb, 4): 4 scales + a d nibble
    per16 = (np.repeat(sc, 4, axis=2) >> (3 * (np.arange(16) % 4)).astype(np.uint16)) & 7     # scale per 16 weights
    idx[:, :, ::2] |= per16 << 12
    d = (sc[:, :, 0] >> 12) | ((sc[:, :, 1] >> 8) & 0xF0) | ((sc[:, :, 2] >> 4) & 0xF00) | (sc[:, :, 3] & 0xF000)
    dst[:, :, 0:2] = d[:, :, None].view(np.uint8)
    dst[:, :, 2:66] = idx.view(np.uint8).reshape(dst.shape[0], dst.shape[1], 64)


EXPANDED = {"IQ2_XXS": _repack_with(EXPANDED_SIGNS, _expand_signs), "IQ2_XS": _repack_with(EXPANDED_XS, _split_xs),
            "IQ1_S": _repack_with(EXPANDED_IQ1_S, _index_iq1_s), "IQ1_M": _repack_with(EXPANDED_IQ1_M, _index_iq1_m)}


_NOTE = "the file's bytes, decoded 8 weights a table word"


def _int_layout(name):
    """The integer kernels of an IQ type: IQ3's as 4-bit codes in IQ4_XS's 16-row layout, the lattices' on their
    expanded repacks (IQ2_S on the file's bytes), with the lattice GEMM."""
    if name in NIB_BOOKS:
        return xs16_layout(_repack_to_nibbles(name), f" (the {name} weights as codes of their 16 values)")
    how = " (the signs as 8 bits)" if name in EXPANDED else ""
    return Layout(256, EXPANDED.get(name) or _repack(name), _codes_scratch, _mv_int, _mm_float,
                  _NOTE + how + int_note(q8_k), q8_k, gemm)


for _name in KINDS:
    register(_name, Layout(256, _repack(_name), _no_scratch, _mv_float, _mm_float, _NOTE), _int_layout(_name))
