"""The lattice types IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, run from the file's own bytes.

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
signed bytes). The integer matvec puts those words into vector registers and dots them with the activations there
(lattice_step: llama.cpp's AVX2 step, sdot on ARM), carrying the int32 lanes from sub-block to sub-block; the GEMM
writes each super-block once as 256 biased bytes (decode_sb) and runs the path's dot step (sb_dot16) for every
token; the float kernels (CPUs with no integer path) turn the same bytes into floats.
"""
from typing import NamedTuple

import numpy as np
from llvmlite import ir
import numba
from numba import njit, prange, types
from numba.extending import intrinsic, models, overload, register_model

from kvant.formats.codecs_iq import (GRID_IQ1_S, GRID_IQ2_S, GRID_IQ2_XS, GRID_IQ2_XXS, GRID_IQ3_S, GRID_IQ3_XXS,
                                     KSIGNS)

from ._common import F32, dot, float_matmul
from ._gemm import register_gemm
from ._ir import f16_to_f32, load_u16 as u16, load_u32 as u32
from ._isa import _V8I32, _V32I8, FAST, INT_KERNELS, WIDE_UNBIASED, dot4, sign_dot32
from ._vnni import _I8, _I32, _V16I32, _V64I8, _as_i64, _c64, _data, _declare, _is_arr, _vec_load
from .actquant import q8_k, q8_k_codes
from .intdot import FLOAT_MATVEC, code_sums, k16_scratch
from .registry import Layout, register

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


def _iq1_words():
    """The IQ1 weights 8 g + delta as signed bytes (g in -1, 0, 1): index idx for delta +1, 2048 + idx for -1."""
    g = GRID_IQ1_S.astype(np.int64)
    return _words(np.concatenate([8 * g + 1, 8 * g - 1]).astype(np.int8).view(np.uint8))


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
# IQ1's weights (odd, |w| <= 9) come as signed bytes instead, the same four words as g and m (Kind.signed_words).

@njit(cache=True, inline="always")
def _iq2_xxs(src, s, ib):
    """d, then 8 x (4 grid-index bytes, u32: 4 x 7 sign bits + a 4-bit scale)."""
    p = s + 2 + 8 * ib
    aux = u32(src, p + 4)
    ls = 2 * np.int64(aux >> 28) + 1
    return (MAG_IQ2_XXS[src[p]], MAG_IQ2_XXS[src[p + 1]], MAG_IQ2_XXS[src[p + 2]], MAG_IQ2_XXS[src[p + 3]],
            SIGNS7[aux & 127], SIGNS7[(aux >> 7) & 127], SIGNS7[(aux >> 14) & 127], SIGNS7[(aux >> 21) & 127],
            ls, ls)


@njit(cache=True, inline="always")
def _iq2_xs_pair(src, p):
    v = u16(src, p)
    return MAG_IQ2_XS[v & 511], SIGNS7[v >> 9]


@njit(cache=True, inline="always")
def _iq2_xs(src, s, ib):
    """d, u16 qs[32] (a 9-bit grid index, a 7-bit sign index), 4-bit scales[16] (one per 16)."""
    p = s + 2 + 8 * ib
    g0, m0 = _iq2_xs_pair(src, p)
    g1, m1 = _iq2_xs_pair(src, p + 2)
    g2, m2 = _iq2_xs_pair(src, p + 4)
    g3, m3 = _iq2_xs_pair(src, p + 6)
    lo, hi = _nibble_ls(src[s + 66 + ib])
    return g0, g1, g2, g3, m0, m1, m2, m3, lo, hi


@njit(cache=True, inline="always")
def _iq2_s_mag(src, s, ib, l, qh):
    return MAG_IQ2_S[np.int64(src[s + 2 + 4 * ib + l]) | (((qh >> (2 * l)) & 3) << 8)]


@njit(cache=True, inline="always")
def _iq2_s(src, s, ib):
    """d, qs[32] (low 8 index bits), signs[32], qh[8] (2 more index bits each), 4-bit scales[16]."""
    qh = np.int64(src[s + 66 + ib])
    p = s + 34 + 4 * ib
    lo, hi = _nibble_ls(src[s + 74 + ib])
    return (_iq2_s_mag(src, s, ib, 0, qh), _iq2_s_mag(src, s, ib, 1, qh), _iq2_s_mag(src, s, ib, 2, qh),
            _iq2_s_mag(src, s, ib, 3, qh), SIGNS8[src[p]], SIGNS8[src[p + 1]], SIGNS8[src[p + 2]],
            SIGNS8[src[p + 3]], lo, hi)


@njit(cache=True, inline="always")
def _iq3_xxs_mag(src, p):
    return MAG_IQ3_XXS[src[p]] | (MAG_IQ3_XXS[src[p + 1]] << U64(32))


@njit(cache=True, inline="always")
def _iq3_xxs(src, s, ib):
    """d, qs[64] (grid indices of 4 values), 8 x u32 (4 x 7 sign bits + a 4-bit scale)."""
    aux = u32(src, s + 66 + 4 * ib)
    ls = 2 * np.int64(aux >> 28) + 1
    p = s + 2 + 8 * ib
    return (_iq3_xxs_mag(src, p), _iq3_xxs_mag(src, p + 2), _iq3_xxs_mag(src, p + 4), _iq3_xxs_mag(src, p + 6),
            SIGNS7[aux & 127], SIGNS7[(aux >> 7) & 127], SIGNS7[(aux >> 14) & 127], SIGNS7[(aux >> 21) & 127],
            ls, ls)


@njit(cache=True, inline="always")
def _iq3_s_mag(src, s, ib, l, qh):
    e = 8 * ib + 2 * l
    lo = MAG_IQ3_S[np.int64(src[s + 2 + e]) | (((qh >> (2 * l)) & 1) << 8)]
    return lo | (MAG_IQ3_S[np.int64(src[s + 3 + e]) | (((qh >> (2 * l + 1)) & 1) << 8)] << U64(32))


@njit(cache=True, inline="always")
def _iq3_s(src, s, ib):
    """d, qs[64] (low 8 index bits), qh[8] (a 9th bit each), signs[32], 4-bit scales[8] (one per 32)."""
    qh = np.int64(src[s + 66 + ib])
    p = s + 74 + 4 * ib
    ls = 2 * ((np.int64(src[s + 106 + (ib >> 1)]) >> (4 * (ib & 1))) & 15) + 1
    return (_iq3_s_mag(src, s, ib, 0, qh), _iq3_s_mag(src, s, ib, 1, qh), _iq3_s_mag(src, s, ib, 2, qh),
            _iq3_s_mag(src, s, ib, 3, qh), SIGNS8[src[p]], SIGNS8[src[p + 1]], SIGNS8[src[p + 2]],
            SIGNS8[src[p + 3]], ls, ls)


@njit(cache=True, inline="always")
def _iq1_s_index(src, s, ib, l, h):
    """Index into IQ1_WORDS: 8 grid-index bits of qs, 3 of qh, the delta's sign (qh's top bit)."""
    return np.int64(src[s + 2 + 4 * ib + l]) | (((h >> (3 * l)) & 7) << 8) | ((h >> 15) << 11)


@njit(cache=True, inline="always")
def _iq1_s(src, s, ib):
    """d, qs[32] (low 8 index bits), u16 qh[8] (3 more index bits per 8 values, a 3-bit scale, the delta's sign)."""
    h = np.int64(u16(src, s + 34 + 2 * ib))
    w0, w1 = IQ1_WORDS[_iq1_s_index(src, s, ib, 0, h)], IQ1_WORDS[_iq1_s_index(src, s, ib, 1, h)]
    w2, w3 = IQ1_WORDS[_iq1_s_index(src, s, ib, 2, h)], IQ1_WORDS[_iq1_s_index(src, s, ib, 3, h)]
    ls = 2 * ((h >> 12) & 7) + 1
    return w0, w1, w2, w3, w0, w1, w2, w3, ls, ls


@njit(cache=True, inline="always")
def _iq1_m_word(src, s, m):
    """The 8 weights m: qh's nibble holds 3 more index bits and the delta's sign (IQ1_WORDS' layout)."""
    hq = (np.int64(src[s + 32 + (m >> 1)]) >> (4 * (m & 1))) & 15
    return IQ1_WORDS[np.int64(src[s + m]) | (hq << 8)]


@njit(cache=True, inline="always")
def _iq1_m(src, s, ib):
    """qs[32] (low 8 index bits), qh[16] (per 8 values: 3 more index bits and the delta's sign), u16 scales[4]
    (3-bit scales per 16 values; fp16 d in their top nibbles)."""
    w0, w1 = _iq1_m_word(src, s, 4 * ib), _iq1_m_word(src, s, 4 * ib + 1)
    w2, w3 = _iq1_m_word(src, s, 4 * ib + 2), _iq1_m_word(src, s, 4 * ib + 3)
    sc = np.int64(u16(src, s + 48 + 2 * (ib >> 1))) >> (6 * (ib & 1))
    return w0, w1, w2, w3, w0, w1, w2, w3, 2 * (sc & 7) + 1, 2 * ((sc >> 3) & 7) + 1


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
    p = s + 48
    d = ((u16(src, p) >> 12) | ((u16(src, p + 2) >> 8) & 0xF0) | ((u16(src, p + 4) >> 4) & 0xF00)
         | (u16(src, p + 6) & 0xF000))
    return f16_to_f32(d) * F32(0.125)


class Kind(NamedTuple):
    """One type: its sub-block decoder and dscale, its block bytes, the dtype of its tag, whether its decoder gives
    signed weight bytes. A matrix carries an empty tag array of its type's dtype: the kernels compile once per
    dtype, and sub32 / dscale / block_bytes / lattice_step pick the type's code at compile time (with the type a
    run-time value, all seven decoders behind a branch in one loop ran 1.5x slower)."""
    decoder: object
    dscale: object
    block_bytes: int
    tag: type
    signed_words: bool = False


KINDS = {"IQ2_XXS": Kind(_iq2_xxs, _d_eighth, 66, np.int8), "IQ2_XS": Kind(_iq2_xs, _d_eighth, 74, np.uint8),
         "IQ2_S": Kind(_iq2_s, _d_eighth, 82, np.int16), "IQ3_XXS": Kind(_iq3_xxs, _d_quarter, 98, np.uint16),
         "IQ3_S": Kind(_iq3_s, _d_whole, 110, np.int32), "IQ1_S": Kind(_iq1_s, _d_eighth, 50, np.uint32, True),
         "IQ1_M": Kind(_iq1_m, _d_iq1_m, 56, np.int64, True)}
_BY_TAG = {str(numba.from_dtype(np.dtype(kind.tag))): kind for kind in KINDS.values()}


def sub32(tag, src, s, ib):
    """Sub-block ib (32 weights) of the super-block at byte s of a row of the tag's type: (g0..g3, m0..m3, ls_lo,
    ls_hi) as the decoders above. Numba-compiled code only (the overloads below)."""
    raise TypeError("sub32 works inside numba-compiled kernels only")


def dscale(tag, src, s):
    """The float factor of the super-block at byte s (numba-compiled code only)."""
    raise TypeError("dscale works inside numba-compiled kernels only")


def block_bytes(tag):
    """The block size in bytes of the tag's type (numba-compiled code only)."""
    raise TypeError("block_bytes works inside numba-compiled kernels only")


@overload(sub32, inline="always")
def _sub32(tag, src, s, ib):
    decoder = _BY_TAG[str(tag.dtype)].decoder
    return lambda tag, src, s, ib: decoder(src, s, ib)


@overload(dscale, inline="always")
def _dscale(tag, src, s):
    factor = _BY_TAG[str(tag.dtype)].dscale
    return lambda tag, src, s: factor(src, s)


@overload(block_bytes, inline="always")
def _block_bytes(tag):
    size = _BY_TAG[str(tag.dtype)].block_bytes
    return lambda tag: size


def biased(tag, g, m):
    """A decoder's word pair as 8 weights + 128 (numba-compiled code only)."""
    raise TypeError("biased works inside numba-compiled kernels only")


@overload(biased, inline="always")
def _biased(tag, g, m):
    if _BY_TAG[str(tag.dtype)].signed_words:
        return lambda tag, g, m: g ^ _BIAS     # + 128 of a signed byte: its top bit flipped
    return lambda tag, g, m: _signed(g, m)


@njit(cache=True, inline="always")
def decode_sb(tag, w, ls, src, s):
    """The super-block at byte s into w (32 words: 256 weights + 128) and ls (16 int32); returns its dscale."""
    for ib in range(8):
        g0, g1, g2, g3, m0, m1, m2, m3, lo, hi = sub32(tag, src, s, ib)
        w[4 * ib] = biased(tag, g0, m0)
        w[4 * ib + 1] = biased(tag, g1, m1)
        w[4 * ib + 2] = biased(tag, g2, m2)
        w[4 * ib + 3] = biased(tag, g3, m3)
        ls[2 * ib] = lo
        ls[2 * ib + 1] = hi
    return dscale(tag, src, s)


# ---------------------------------------------------------------- the integer dot product of a super-block

def _sb_dot16_codegen(context, builder, signature, args):
    sig = signature.args
    w_p = _data(context, builder, sig[0], args[0], _I8)
    xq_p = _data(context, builder, sig[1], args[1], _I8)
    xo = _as_i64(builder, args[2])
    ls = _vec_load(builder, _data(context, builder, sig[3], args[3], _I32), _c64(0), _V16I32)
    acc = ir.Constant(_V16I32, None)
    for c in range(4):          # 64 weights: lane l holds 4 of group 4c + l // 4
        u = _vec_load(builder, w_p, _c64(64 * c), _V64I8)
        x = _vec_load(builder, xq_p, builder.add(xo, _c64(64 * c)), _V64I8)
        lanes = dot4(builder, ir.Constant(_V16I32, None), u, x, True)
        spread = builder.shuffle_vector(ls, ls, ir.Constant(_V16I32, [4 * c + l // 4 for l in range(16)]))
        acc = builder.add(acc, builder.mul(lanes, spread))
    total = builder.call(_declare(builder.module, "llvm.vector.reduce.add.v16i32", _I32, [_V16I32]), [acc])
    return builder.sext(total, ir.IntType(64))


@intrinsic
def sb_dot16(typingctx, w, xq, xo, ls):
    """sum_k ls[k] * sum_{j < 16} (w[16 k + j] - 128) * xq[xo + 16 k + j] over one super-block: w 256 bytes (the
    weights + 128), ls 16 int32. On a WIDE_UNBIASED path (_isa) exactly that; elsewhere the + 128 stays in and
    128 * sum_k ls[k] * (group k's code sum) is the caller's to take out."""
    ok = (_is_arr(w, types.uint8) and _is_arr(xq, types.int8) and isinstance(xo, types.Integer)
          and _is_arr(ls, types.int32))
    return (types.int64(w, xq, xo, ls), _sb_dot16_codegen) if ok else None


class _Lanes(types.Type):
    """8 int32 lanes in a vector register, carried by numba code from one lattice_step to the next (so that each
    sub-block's words go from its decoder to the dot step while the decoder of the next one runs)."""
    def __init__(self):
        super().__init__(name="Lanes8xi32")


LANES = _Lanes()


@register_model(_Lanes)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V8I32)


@intrinsic
def no_lanes(typingctx):
    """Zero lanes."""
    return LANES(), lambda context, builder, signature, args: ir.Constant(_V8I32, None)


@intrinsic
def lanes_sum(typingctx, lanes):
    """The sum of the lanes, as int64."""
    def codegen(context, builder, signature, args):
        total = builder.call(_declare(builder.module, "llvm.vector.reduce.add.v8i32", _I32, [_V8I32]), [args[0]])
        return builder.sext(total, ir.IntType(64))
    return (types.int64(lanes), codegen) if lanes == LANES else None


def _lattice_step_codegen(context, builder, signature, args):
    sig = signature.args
    signed_words = _BY_TAG[str(sig[1].dtype)].signed_words
    xq_p = _data(context, builder, sig[2], args[2], _I8)
    x = _vec_load(builder, xq_p, _as_i64(builder, args[3]), _V32I8)
    v4 = ir.VectorType(ir.IntType(64), 4)

    def word_vector(words):
        v = ir.Constant(v4, None)
        for k, word in enumerate(words):
            v = builder.insert_element(v, word, ir.Constant(_I32, k))
        return builder.bitcast(v, _V32I8)

    g = word_vector(args[4:8])
    m = g if signed_words else word_vector(args[8:12])
    lo, hi = (builder.trunc(v, _I32) for v in args[12:14])
    return builder.add(args[0], sign_dot32(builder, g, m, x, lo, hi, signed_words))


@intrinsic
def lattice_step(typingctx, lanes, tag, xq, xo, g0, g1, g2, g3, m0, m1, m2, m3, ls_lo, ls_hi):
    """lanes + the products of 32 weights and xq[xo:xo + 32], the two 16-weight halves times ls_lo and ls_hi: the
    weights as four words of magnitudes g and four of sign masks m, or as signed bytes (the tag's Kind says which),
    a sub32 decoder's output, put into vectors in registers (vmovq, vpunpcklqdq, vinserti128) as llama.cpp's AVX2
    code does. lanes_sum gives the total."""
    words = (g0, g1, g2, g3, m0, m1, m2, m3)
    ok = (lanes == LANES and isinstance(tag, types.Array) and str(tag.dtype) in _BY_TAG
          and _is_arr(xq, types.int8) and isinstance(xo, types.Integer) and all(w == types.uint64 for w in words)
          and ls_lo == types.int64 and ls_hi == types.int64)
    return (LANES(lanes, tag, xq, xo, *words, ls_lo, ls_hi), _lattice_step_codegen) if ok else None


@njit(cache=True, inline="always")
def _bias_term(ls, bs, g0):
    """128 * sum_k ls[k] * bs[g0 + k]: what the biased weights add to sb_dot16 (bs: code sums per 16)."""
    t = 0
    for k in range(16):
        t += np.int64(ls[k]) * np.int64(bs[g0 + k])
    return 128 * t


@njit(cache=True, inline="always")
def _sb_int(w8, ls, xq, b, bs):
    total = sb_dot16(w8, xq, 256 * b, ls)
    if not WIDE_UNBIASED:
        total -= _bias_term(ls, bs, 16 * b)
    return F32(total)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_int(out, x, raw, tag, xq, xd, bs):
    """Decode: each sub-block's table words go from the decoder to the dot step in registers."""
    q8_k_codes(xq, xd, x)
    bsize = block_bytes(tag)
    rows, nsb = raw.shape[0], raw.shape[1] // bsize
    nt = min(rows, 64)
    for c in prange(nt):
        for r in range(rows * c // nt, rows * (c + 1) // nt):
            src = raw[r]
            acc = F32(0.0)
            for b in range(nsb):
                s = b * bsize
                lanes = no_lanes()
                for ib in range(8):
                    g0, g1, g2, g3, m0, m1, m2, m3, lo, hi = sub32(tag, src, s, ib)
                    lanes = lattice_step(lanes, tag, xq, 256 * b + 32 * ib, g0, g1, g2, g3, m0, m1, m2, m3, lo, hi)
                acc += dscale(tag, src, s) * xd[8 * b] * F32(lanes_sum(lanes))
            out[r] = acc


@njit(cache=True, fastmath=FAST, parallel=True)
def _gemm(out, xq, xd, xs, xm, raw, tag):
    """Prefill: each super-block of a row decoded once, then dotted with every token's codes."""
    bsize = block_bytes(tag)
    n, rows, nsb = xq.shape[0], raw.shape[0], raw.shape[1] // bsize
    bs = np.empty((n, xq.shape[1] // 16), np.int32)
    if not WIDE_UNBIASED:
        for t in prange(n):
            code_sums(bs[t], xq[t])
    nt = min(rows, 64)
    for c in prange(nt):
        w = np.empty(32, np.uint64)
        ls = np.empty(16, np.int32)
        w8 = w.view(np.uint8)
        acc = np.empty(n, np.float32)
        for r in range(rows * c // nt, rows * (c + 1) // nt):
            src = raw[r]
            acc[:] = F32(0.0)
            for b in range(nsb):
                dscale = decode_sb(tag, w, ls, src, b * bsize)
                for t in range(n):
                    acc[t] += dscale * xd[t, 8 * b] * _sb_int(w8, ls, xq[t], b, bs[t])
            for t in range(n):
                out[t, r] = acc[t]


def gemm(out, codes, raw, tag):
    _gemm(out, *codes, raw, tag)


# ---------------------------------------------------------------- floats (CPUs with no integer path)

@njit(cache=True, fastmath=FAST)
def decode_row(dst, r, raw, tag):
    """Row r as floats, the gguf package's values exactly (the module's docstring says why)."""
    bsize = block_bytes(tag)
    w = np.empty(32, np.uint64)
    ls = np.empty(16, np.int32)
    w8 = w.view(np.uint8)
    src = raw[r]
    for b in range(raw.shape[1] // bsize):
        dscale = decode_sb(tag, w, ls, src, b * bsize)
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


def _repack(name):
    """The file's rows as they are, with the type's tag."""
    tag = np.empty(0, KINDS[name].tag)
    return lambda raw, cols: (raw, tag)


_NOTE = "the file's bytes, decoded 8 weights a table word"
for _name in KINDS:
    FLOAT_MATVEC[_name] = (_mv_float, _no_scratch)
    if INT_KERNELS:
        register(_name, Layout(256, _repack(_name), k16_scratch, _mv_int, _mm_float,
                               _NOTE + ", int8 x Q8_K activations", q8_k))
        register_gemm(_name, "q8_k", gemm)
    else:
        register(_name, Layout(256, _repack(_name), _no_scratch, _mv_float, _mm_float, _NOTE))
