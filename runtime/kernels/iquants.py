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

The decoders write 8 weights at a time from tables of 64-bit words (grid magnitudes, sign masks); the integer matvec
then runs the path's dot step over the 256 bytes (sb_dot16), the GEMM decodes a super-block once for all tokens, the
float kernels (CPUs with no integer path) turn the same bytes into floats.
"""
import numpy as np
from llvmlite import ir
import numba
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from kvant.formats.codecs_common import u16, u32
from kvant.formats.codecs_iq import (GRID_IQ1_S, GRID_IQ2_S, GRID_IQ2_XS, GRID_IQ2_XXS, GRID_IQ3_S, GRID_IQ3_XXS,
                                     KSIGNS)

from ._common import F32, dot, float_matmul
from ._gemm import register_gemm
from ._ir import f16_to_f32
from ._isa import FAST, INT_KERNELS, WIDE_UNBIASED, dot4
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


def _iq1_words(delta):
    """The IQ1 grid (-1, 0, 1) as 8 g + delta + 128 per byte."""
    return _words((8 * GRID_IQ1_S.astype(np.int64) + delta + 128).astype(np.uint8))


MAG_IQ2_XXS, MAG_IQ2_XS, MAG_IQ2_S = (_words(g.astype(np.uint8)) for g in (GRID_IQ2_XXS, GRID_IQ2_XS, GRID_IQ2_S))
MAG_IQ3_XXS, MAG_IQ3_S = (_words(g.astype(np.uint8)) for g in (GRID_IQ3_XXS, GRID_IQ3_S))
SIGNS7 = _masks(KSIGNS)                                     # a 7-bit sign index (ksigns: 8th bit = parity)
SIGNS8 = _masks(np.arange(256, dtype=np.uint16))           # a byte of sign bits
IQ1_PLUS, IQ1_MINUS = _iq1_words(1), _iq1_words(-1)


@njit(cache=True, inline="always")
def _signed(mag, mask):
    """8 magnitudes (< 128) with their signs, + 128 each (no carry or borrow crosses a byte)."""
    return ((_BIAS + mag) & ~mask) | ((_BIAS - mag) & mask)


@njit(cache=True, inline="always")
def _pair_ls(ls, k, value):
    ls[2 * k] = value
    ls[2 * k + 1] = value


@njit(cache=True, inline="always")
def _nibble_scales(ls, src, o):
    """ls = 2 s + 1 for the 16 4-bit scales s of the bytes at src[o:o + 8], low nibble first (one per 16)."""
    for g in range(16):
        ls[g] = 2 * ((np.int64(src[o + (g >> 1)]) >> (4 * (g & 1))) & 15) + 1


@njit(cache=True, inline="always")
def _iq2_xxs(w, ls, src, s):
    """d, then 8 x (4 grid-index bytes, u32: 4 x 7 sign bits + a 4-bit scale)."""
    for ib in range(8):
        p = s + 2 + 8 * ib
        aux = u32(src, p + 4)
        _pair_ls(ls, ib, 2 * (aux >> 28) + 1)
        for l in range(4):
            w[4 * ib + l] = _signed(MAG_IQ2_XXS[src[p + l]], SIGNS7[(aux >> (7 * l)) & 127])
    return f16_to_f32(u16(src, s)) * F32(0.125)


@njit(cache=True, inline="always")
def _iq2_xs(w, ls, src, s):
    """d, u16 qs[32] (a 9-bit grid index, a 7-bit sign index), 4-bit scales[16]."""
    for m in range(32):
        v = u16(src, s + 2 + 2 * m)
        w[m] = _signed(MAG_IQ2_XS[v & 511], SIGNS7[v >> 9])
    _nibble_scales(ls, src, s + 66)
    return f16_to_f32(u16(src, s)) * F32(0.125)


@njit(cache=True, inline="always")
def _iq2_s(w, ls, src, s):
    """d, qs[32] (low 8 index bits), signs[32], qh[8] (2 more index bits each), 4-bit scales[16]."""
    for m in range(32):
        idx = np.int64(src[s + 2 + m]) | (((np.int64(src[s + 66 + (m >> 2)]) >> (2 * (m & 3))) & 3) << 8)
        w[m] = _signed(MAG_IQ2_S[idx], SIGNS8[src[s + 34 + m]])
    _nibble_scales(ls, src, s + 74)
    return f16_to_f32(u16(src, s)) * F32(0.125)


@njit(cache=True, inline="always")
def _iq3_xxs(w, ls, src, s):
    """d, qs[64] (grid indices of 4 values), 8 x u32 (4 x 7 sign bits + a 4-bit scale)."""
    for ib in range(8):
        aux = u32(src, s + 66 + 4 * ib)
        _pair_ls(ls, ib, 2 * (aux >> 28) + 1)
        for l in range(4):
            p = s + 2 + 8 * ib + 2 * l
            mag = MAG_IQ3_XXS[src[p]] | (MAG_IQ3_XXS[src[p + 1]] << U64(32))
            w[4 * ib + l] = _signed(mag, SIGNS7[(aux >> (7 * l)) & 127])
    return f16_to_f32(u16(src, s)) * F32(0.25)


@njit(cache=True, inline="always")
def _iq3_s(w, ls, src, s):
    """d, qs[64] (low 8 index bits), qh[8] (a 9th bit each), signs[32], 4-bit scales[8] (per 32)."""
    for m in range(32):
        mag = U64(0)
        for h in range(2):
            e = 2 * m + h
            idx = np.int64(src[s + 2 + e]) | (((np.int64(src[s + 66 + (e >> 3)]) >> (e & 7)) & 1) << 8)
            mag |= MAG_IQ3_S[idx] << U64(32 * h)
        w[m] = _signed(mag, SIGNS8[src[s + 74 + m]])
    for k in range(8):
        _pair_ls(ls, k, 2 * ((np.int64(src[s + 106 + (k >> 1)]) >> (4 * (k & 1))) & 15) + 1)
    return f16_to_f32(u16(src, s))


@njit(cache=True, inline="always")
def _iq1_s(w, ls, src, s):
    """d, qs[32] (low 8 index bits), u16 qh[8] (3 more index bits per 8 values, a 3-bit scale, the delta's sign)."""
    for ib in range(8):
        h = u16(src, s + 34 + 2 * ib)
        _pair_ls(ls, ib, 2 * ((h >> 12) & 7) + 1)
        for l in range(4):
            idx = np.int64(src[s + 2 + 4 * ib + l]) | (((h >> (3 * l)) & 7) << 8)
            w[4 * ib + l] = IQ1_MINUS[idx] if h & 0x8000 else IQ1_PLUS[idx]
    return f16_to_f32(u16(src, s)) * F32(0.125)


@njit(cache=True, inline="always")
def _iq1_m(w, ls, src, s):
    """qs[32] (low 8 index bits), qh[16] (per 8 values: 3 more index bits and the delta's sign), u16 scales[4]
    (3-bit scales per 16 values; fp16 d in their top nibbles)."""
    p = s + 48
    for m in range(32):
        hq = (np.int64(src[s + 32 + (m >> 1)]) >> (4 * (m & 1))) & 15
        idx = np.int64(src[s + m]) | ((hq & 7) << 8)
        w[m] = IQ1_MINUS[idx] if hq & 8 else IQ1_PLUS[idx]
    for k in range(16):
        ls[k] = 2 * ((u16(src, p + 2 * (k >> 2)) >> (3 * (k & 3))) & 7) + 1
    d = ((u16(src, p) >> 12) | ((u16(src, p + 2) >> 8) & 0xF0) | ((u16(src, p + 4) >> 4) & 0xF00)
         | (u16(src, p + 6) & 0xF000))
    return f16_to_f32(d) * F32(0.125)


# type: (its decoder, block bytes, the dtype of its tag). A matrix carries an empty tag array of its type's dtype:
# the kernels compile once per dtype, and decode_sb / block_bytes pick the decoder and block size at compile time
# (with the type a run-time value, all seven decoders behind a branch in one loop ran 1.5x slower).
KINDS = {"IQ2_XXS": (_iq2_xxs, 66, np.int8), "IQ2_XS": (_iq2_xs, 74, np.uint8), "IQ2_S": (_iq2_s, 82, np.int16),
         "IQ3_XXS": (_iq3_xxs, 98, np.uint16), "IQ3_S": (_iq3_s, 110, np.int32), "IQ1_S": (_iq1_s, 50, np.uint32),
         "IQ1_M": (_iq1_m, 56, np.int64)}
_BY_TAG = {str(numba.from_dtype(np.dtype(tag))): (decoder, size) for decoder, size, tag in KINDS.values()}


def decode_sb(tag, w, ls, src, s):
    """Super-block s (byte offset) of a row of the tag's type into w (32 words: 256 weights + 128), ls (16 int32);
    returns its dscale. Numba-compiled code only (the overload below)."""
    raise TypeError("decode_sb works inside numba-compiled kernels only")


def block_bytes(tag):
    """The block size in bytes of the tag's type (numba-compiled code only)."""
    raise TypeError("block_bytes works inside numba-compiled kernels only")


@overload(decode_sb, inline="always")
def _decode_sb(tag, w, ls, src, s):
    decoder = _BY_TAG[str(tag.dtype)][0]
    return lambda tag, w, ls, src, s: decoder(w, ls, src, s)


@overload(block_bytes, inline="always")
def _block_bytes(tag):
    size = _BY_TAG[str(tag.dtype)][1]
    return lambda tag: size


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
    q8_k_codes(xq, xd, x)
    if not WIDE_UNBIASED:       # only the +128 of the biased weights needs the code sums (_sb_int)
        code_sums(bs, xq)
    bsize = block_bytes(tag)
    rows, nsb = raw.shape[0], raw.shape[1] // bsize
    nt = min(rows, 64)
    for c in prange(nt):
        w = np.empty(32, np.uint64)
        ls = np.empty(16, np.int32)
        w8 = w.view(np.uint8)
        for r in range(rows * c // nt, rows * (c + 1) // nt):
            src = raw[r]
            acc = F32(0.0)
            for b in range(nsb):
                dscale = decode_sb(tag, w, ls, src, b * bsize)
                acc += dscale * xd[8 * b] * _sb_int(w8, ls, xq, b, bs)
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
    tag = np.empty(0, KINDS[name][2])
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
