"""Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL and IQ4_XS with 16 rows' 32-blocks interleaved, so that the 16 int32 lanes
of a vpdpbusd are 16 rows (_vnni16.py says why; kquants_rows16.py does the same for Q4_K).

Per group g of 16 rows (the last group zero-padded) and 32-block b:
    q[g, b]   256 bytes: chunk c, row r, byte t at 64 c + 4 r + t = the row's block byte 4 c + t as the file has
              it (low nibble element 4 c + t, high nibble element 16 + 4 c + t)
    h[g, b]   Q5_0 / Q5_1: the 5th bits as 8 little-endian 64-bit masks, mask 2 c + half, bit 4 r + t = the 5th
              bit of element 16 half + 4 c + t of row r (a masked byte move puts them in place)
    d[g, b]   the 16 rows' fp16 d bits (and Q4_1's / Q5_1's m[g, b] the same)
Q8_0 (I8_16): q[g, b] 512 bytes, chunk k, row r, byte t at 64 k + 4 r + t = element 4 k + t + 128 (unsigned, so
vpdpbusd takes it as it is; -128 * code sum per block) - already _gemm.py's TILE order.
Exactly the file's bytes per row and block (18, 20, 22, 24, 34). IQ4_XS: its super-blocks' 8 blocks in the same order,
q[g, 8 s + b], with the 6-bit block scales as int8 ls - 32 in sc[g, s, 16 b + r] and fp16 d[g, s, r] (138 bytes a
row and super-block, the file 136). Used where the CPU has an integer path (_isa.py; legacy.py, kquants.py register
it); decode, the integer prefill GEMM and the float matmul all read this order.

What differs between the 32-block types is data, not code (TYPES): the code offset the integer sums take out
(-offset * sum of the activation codes per block), whether the codes stand for the IQ4 codebook (looked up + 128),
the 5th bits, and the min of Q4_1 / Q5_1 (m times Q8_1's fp16 block sum, as llama.cpp).
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import njit, prange
from numba.extending import overload

from kvant.formats.blocks import block, has_field

from ._isa import FAST
from ._common import F32, copy_into, float_matmul, u16_at, zeros_on_lines
from ._gemm import _offsets, spread_codes, tiles
from ._ir import widen
from ._vnni16 import (BOOK_OF_TAG, BOOK_TAGS, CODEBOOKS, i8_16_dot, iq4_16_dot, nib16_dot, nib16_min_dot, nib16_tile,
                      nib16h_dot, nib16h_min_dot, nib16h_tile, xs16_dot)
from .actquant import q8_0, q8_codes, q8_k, q8_k_codes
from .intdot import IQ4_VALUES, code_sums, int_note
from .registry import Layout

GROUP = 16      # rows interleaved: the 16 int32 lanes of a vector
IQ4XS = block("IQ4_XS")


@njit(cache=True, parallel=True)
def _repack(raw, bsize, qoff, q, h, d, m):
    """Blocks of bsize bytes: fp16 d at 0, fp16 m at 2 (if m has room), the 5th bits as a u32 at qoff - 4 (if h
    has room), 16 code bytes at qoff (Q8_0, q 512 bytes a block: 32 int8 codes)."""
    rows, nb = raw.shape[0], q.shape[1]
    has_m, has_h, i8 = m.shape[2] > 0, h.shape[2] > 0, q.shape[2] == 512
    for g in prange(q.shape[0]):
        for r in range(min(GROUP, rows - GROUP * g)):
            src = raw[GROUP * g + r]
            for b in range(nb):
                o = bsize * b
                d[g, b, r] = u16_at(src, o)
                if has_m:
                    m[g, b, r] = u16_at(src, o + 2)
                if i8:
                    for i in range(32):
                        q[g, b, 64 * (i >> 2) + 4 * r + (i & 3)] = src[o + qoff + i] ^ 0x80
                else:
                    for i in range(16):
                        q[g, b, 64 * (i >> 2) + 4 * r + (i & 3)] = src[o + qoff + i]
                if has_h:
                    for e in range(32):      # element e = 16 half + 4 c + t
                        if (src[o + qoff - 4 + (e >> 3)] >> (e & 7)) & 1:
                            mask, bit = 2 * ((e & 15) >> 2) + (e >> 4), 4 * r + (e & 3)
                            h[g, b, 8 * mask + (bit >> 3)] |= np.uint8(1 << (bit & 7))


def _rp(bsize, qoff, has_m, has_h, i8=False):
    def repack(raw, cols):
        groups, nb = (raw.shape[0] + GROUP - 1) // GROUP, cols // 32
        q = zeros_on_lines((groups, nb, 512 if i8 else 256), np.uint8)
        h = zeros_on_lines((groups, nb, 64 if has_h else 0), np.uint8)
        d = zeros_on_lines((groups, nb, GROUP), np.uint16)
        m = zeros_on_lines((groups, nb, GROUP if has_m else 0), np.uint16)
        _repack(raw, bsize, qoff, q, h, d, m)
        return (q,) + ((h,) if has_h else ()) + (d,) + ((m,) if has_m else ())
    return repack


def _scratch(cols):
    """Q8_0 codes in element order, their scale per 32, Q8_1's fp16 block sums, -offset * code sum per 32."""
    nb = cols // 32
    return np.empty(cols, np.int8), np.empty(nb, np.float32), np.empty(nb, np.float32), np.empty(nb, np.int32)


# ---------------------------------------------------------------- decode
# One kernel per intrinsic: numba picks an intrinsic at compile time only (not through an argument).

@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q4_0(out, x, q, d, xq, xd, xs, xo):
    q8_codes(xq, xd, xs[:0], x)
    code_sums(xo, xq, -8)
    rows, nb = out.shape[0], xd.shape[0]
    for g in prange(q.shape[0]):
        nib16_dot(q[g], d[g], d[g], xq, xd, xo, xs, nb, out, GROUP * g, min(GROUP, rows - GROUP * g))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q8_0(out, x, q, d, xq, xd, xs, xo):
    q8_codes(xq, xd, xs[:0], x)
    code_sums(xo, xq, -128)
    rows, nb = out.shape[0], xd.shape[0]
    for g in prange(q.shape[0]):
        i8_16_dot(q[g], d[g], d[g], xq, xd, xo, xs, nb, out, GROUP * g, min(GROUP, rows - GROUP * g))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q4_1(out, x, q, d, m, xq, xd, xs, xo):
    q8_codes(xq, xd, xs, x)
    xo[:] = 0
    rows, nb = out.shape[0], xd.shape[0]
    for g in prange(q.shape[0]):
        nib16_min_dot(q[g], d[g], m[g], xq, xd, xo, xs, nb, out, GROUP * g, min(GROUP, rows - GROUP * g))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q5_0(out, x, q, h, d, xq, xd, xs, xo):
    q8_codes(xq, xd, xs[:0], x)
    code_sums(xo, xq, -16)
    rows, nb = out.shape[0], xd.shape[0]
    for g in prange(q.shape[0]):
        nib16h_dot(q[g], h[g], d[g], d[g], xq, xd, xo, xs, nb, out, GROUP * g, min(GROUP, rows - GROUP * g))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q5_1(out, x, q, h, d, m, xq, xd, xs, xo):
    q8_codes(xq, xd, xs, x)
    xo[:] = 0
    rows, nb = out.shape[0], xd.shape[0]
    for g in prange(q.shape[0]):
        nib16h_min_dot(q[g], h[g], d[g], m[g], xq, xd, xo, xs, nb, out, GROUP * g, min(GROUP, rows - GROUP * g))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_iq4_nl(out, x, q, d, xq, xd, xs, xo):
    q8_codes(xq, xd, xs[:0], x)
    code_sums(xo, xq, -128)
    rows, nb = out.shape[0], xd.shape[0]
    for g in prange(q.shape[0]):
        iq4_16_dot(q[g], d[g], d[g], xq, xd, xo, xs, nb, out, GROUP * g, min(GROUP, rows - GROUP * g))


# ---------------------------------------------------------------- prefill

@njit(cache=True)
def _tile(wt, ws, wm, r0, q, h, d, m, iq4, has_min, has_h):
    """The group at rows r0.. in _gemm.py's TILE order, block scales ws (mins wm) at 16 b + r."""
    g = r0 // GROUP
    if q.shape[2] == 512:       # I8_16 is the TILE order
        n = q.shape[1] * 512
        copy_into(wt[:n], q[g].reshape(n))
    elif has_h:
        nib16h_tile(wt, q[g], h[g], q.shape[1], 0)
    else:
        nib16_tile(wt, q[g], q.shape[1], iq4)
    for b in range(q.shape[1]):
        for r in range(GROUP):
            ws[GROUP * b + r] = widen(d[g, b, r])
            if has_min:
                wm[GROUP * b + r] = widen(m[g, b, r])


@njit(cache=True, parallel=True)
def _gemm(out, xq, xd, xs, xm, q, h, d, m, off, iq4, has_min, has_h):
    tiles(out, xq, xd, _offsets(xs, off), xm, has_min, off == 128, _tile, (q, h, d, m, iq4, has_min, has_h))


@njit(cache=True, inline="always")
def _fifth_bit(h, g, b, mask, bit):
    return np.int64((h[g, b, 8 * mask + (bit >> 3)] >> (bit & 7)) & 1)


@njit(cache=True, fastmath=FAST)
def _decode_row(dst, row, q, h, d, m, off, iq4, has_min, has_h):
    """Row `row` as floats: d (code - off) (+ m), or d * codebook value."""
    g, r = row // GROUP, row % GROUP
    for b in range(q.shape[1]):
        s = widen(d[g, b, r])
        add = widen(m[g, b, r]) if has_min else -s * F32(off)
        if q.shape[2] == 512:
            for e in range(32):
                dst[32 * b + e] = s * F32(q[g, b, 64 * (e >> 2) + 4 * r + (e & 3)]) + add
            continue
        for c in range(4):
            for t in range(4):
                v = q[g, b, 64 * c + 4 * r + t]
                lo, hi = np.int64(v & 15), np.int64(v >> 4)     # int64: numba makes u8 | i64 a float
                if has_h:
                    lo |= _fifth_bit(h, g, b, 2 * c, 4 * r + t) << 4
                    hi |= _fifth_bit(h, g, b, 2 * c + 1, 4 * r + t) << 4
                e = 32 * b + 4 * c + t
                if iq4:
                    dst[e] = s * F32(IQ4_VALUES[lo])
                    dst[e + 16] = s * F32(IQ4_VALUES[hi])
                else:
                    dst[e] = s * F32(lo) + add
                    dst[e + 16] = s * F32(hi) + add


@njit(cache=True, fastmath=FAST, parallel=True)
def _matmul(out, x, q, h, d, m, off, iq4, has_min, has_h):
    float_matmul(out, x, _decode_row, (q, h, d, m, off, iq4, has_min, has_h))


# ---------------------------------------------------------------- the 32-block types

@dataclass(frozen=True)
class Block16:
    """One 32-block type: its file block (bytes, where its codes start), what its codes carry and its kernel."""
    bsize: int              # bytes of a block in the file
    qoff: int               # offset of its code bytes
    has_min: bool           # Q4_1 / Q5_1: d * code + m
    has_h: bool             # 5th bits (Q5_0 / Q5_1)
    off: int                # the unsigned code minus the value it stands for, taken out of the integer sums
    iq4: int                # codes stand for the IQ4 codebook (looked up + 128)
    i8: bool                # 8-bit codes (I8_16)
    matvec: Callable


def _block16(name, off, iq4, matvec):
    """A 32-block type's row of TYPES, its file block from formats/blocks (_repack reads d at 0, m at 2, the 5th
    bits right before the codes)."""
    b = block(name)
    assert b.d == 0 and getattr(b, "m", 2) == 2 and getattr(b, "qh", b.qs - 4) == b.qs - 4, name
    return Block16(b.size, b.qs, has_field(name, "m"), has_field(name, "qh"), off, iq4, b.size - b.qs == 32, matvec)


TYPES = {   # type: the code offset, IQ4 codebook, decode kernel
    "Q8_0": _block16("Q8_0", 128, 0, _mv_q8_0),
    "Q4_0": _block16("Q4_0", 8, 0, _mv_q4_0),
    "Q4_1": _block16("Q4_1", 0, 0, _mv_q4_1),
    "Q5_0": _block16("Q5_0", 16, 0, _mv_q5_0),
    "Q5_1": _block16("Q5_1", 0, 0, _mv_q5_1),
    "IQ4_NL": _block16("IQ4_NL", 128, 1, _mv_iq4_nl),
}

_NO_BITS = np.zeros((1, 1, 0), np.uint8)


def _runs(off, iq4, has_min, has_h):
    """matmul(out, x, *arrays) and the GEMM's run(out, codes, *arrays) of one type, its arrays (q, [h], d, [m])
    spread into the kernels' fixed order (h empty, m = d where the type has none)."""
    def spread(arrays):
        q, rest = arrays[0], list(arrays[1:])
        h = rest.pop(0) if has_h else _NO_BITS
        d = rest.pop(0)
        return q, h, d, (rest.pop(0) if has_min else d)

    def matmul(out, x, *arrays):
        _matmul(out, x, *spread(arrays), off, iq4, has_min, has_h)

    def gemm(out, codes, *arrays):
        _gemm(out, *codes, *spread(arrays), off, iq4, has_min, has_h)
    return matmul, gemm


def layouts():
    """type name -> its 16-row layout (decode and float matmul) with its integer GEMM."""
    found = {}
    for name, t in TYPES.items():
        matmul, gemm = _runs(t.off, t.iq4, t.has_min, t.has_h)
        codes = ("I8_16: 16 rows' blocks interleaved 4 bytes a row" if t.i8 else
                 "NIB16: 16 rows' blocks interleaved 4 bytes a row" + (" + 5th-bit masks" if t.has_h else ""))
        found[name] = Layout(32, _rp(t.bsize, t.qoff, t.has_min, t.has_h, t.i8), _scratch, t.matvec, matmul,
                             codes + " + fp16 d" + (", m" if t.has_min else "") + " per 32" + int_note(q8_0), q8_0,
                             gemm)
    return found


# ---------------------------------------------------------------- IQ4_XS

@njit(cache=True, parallel=True)
def _repack_iq4_xs(raw, q, sc, d):
    """The file's super-blocks (formats/blocks IQ4_XS): fp16 d, the scales' high bits (u16), their low nibbles
    (4 bytes), 128 code bytes (block b's at 16 b, as IQ4_NL's)."""
    rows, nsb = raw.shape[0], d.shape[1]
    for g in prange(q.shape[0]):
        for r in range(min(GROUP, rows - GROUP * g)):
            src = raw[GROUP * g + r]
            for s in range(nsb):
                o = IQ4XS.size * s
                d[g, s, r] = u16_at(src, o + IQ4XS.d)
                high = np.int64(u16_at(src, o + IQ4XS.scales_h))
                for b in range(8):
                    ls = ((src[o + IQ4XS.scales_l + b // 2] >> (4 * (b % 2))) & 15) | (((high >> (2 * b)) & 3) << 4)
                    sc[g, s, 16 * b + r] = ls - 32
                    for i in range(16):
                        q[g, 8 * s + b, 64 * (i >> 2) + 4 * r + (i & 3)] = src[o + IQ4XS.qs + 16 * b + i]


def xs16_planes(raw, cols):
    """Zeroed planes (q, sc, d) of IQ4_XS's 16-row layout for a matrix of raw's rows."""
    groups, nsb = (raw.shape[0] + GROUP - 1) // GROUP, cols // 256
    return (zeros_on_lines((groups, 8 * nsb, 256), np.uint8), zeros_on_lines((groups, nsb, 128), np.int8),
            zeros_on_lines((groups, nsb, GROUP), np.uint16))


def _rp_iq4_xs(raw, cols):
    q, sc, d = xs16_planes(raw, cols)
    _repack_iq4_xs(raw, q, sc, d)
    return q, sc, d, np.empty(0, BOOK_TAGS[1])


def _scratch_k(cols):
    """Q8_K codes in element order, the scale per 32, exact int32 code sums per 32."""
    return np.empty(cols, np.int8), np.empty(cols // 32, np.float32), np.empty(cols // 32, np.int32)


# The codebooks of _vnni16.CODEBOOKS as numba sees them: a row of values per number, the factor of d
_BOOK_VALUES = np.array([np.arange(16)] + [entry[0] for entry in CODEBOOKS[1:]], np.float32)
_BOOK_FACTORS = np.array([1.0] + [entry[1] for entry in CODEBOOKS[1:]], np.float32)


def book_number(book):
    """The CODEBOOKS number of a book tag (numba-compiled code only)."""
    raise TypeError("book_number works inside numba-compiled kernels only")


@overload(book_number, inline="always")
def _book_number(book):
    number = BOOK_OF_TAG[str(book.dtype)]
    return lambda book: number


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_xs16(out, x, q, sc, d, book, xq, xd, bs):
    q8_k_codes(xq, xd, x)
    code_sums(bs, xq)
    rows, nsb = out.shape[0], d.shape[1]
    for g in prange(q.shape[0]):
        xs16_dot(q[g], sc[g], d[g], xq, xd, bs, nsb, out, GROUP * g, min(GROUP, rows - GROUP * g), book)


@njit(cache=True)
def _tile_xs16(wt, ws, wm, r0, q, sc, d, book):
    g = r0 // GROUP
    number = book_number(book)
    nib16_tile(wt, q[g], q.shape[1], number)
    factor = _BOOK_FACTORS[number]
    for b in range(q.shape[1]):
        for r in range(GROUP):
            ws[GROUP * b + r] = widen(d[g, b >> 3, r]) * factor * F32(sc[g, b >> 3, 16 * (b & 7) + r])


@njit(cache=True, parallel=True)
def _gemm_xs16(out, xq, xd, xs, xm, q, sc, d, book):
    # the IQ3 lattices' codebooks are small weights (below 64), IQ4's not
    tiles(out, xq, xd, _offsets(xs, 128), xm, False, True, _tile_xs16, (q, sc, d, book), 1, book_number(book) > 1)


GEMM_XS16 = spread_codes(_gemm_xs16)


@njit(cache=True, fastmath=FAST)
def _decode_row_xs16(dst, row, q, sc, d, book):
    g, r = row // GROUP, row % GROUP
    number = book_number(book)
    values = _BOOK_VALUES[number]
    for b in range(q.shape[1]):
        s = widen(d[g, b >> 3, r]) * _BOOK_FACTORS[number] * F32(sc[g, b >> 3, 16 * (b & 7) + r])
        for c in range(4):
            for t in range(4):
                v = q[g, b, 64 * c + 4 * r + t]
                e = 32 * b + 4 * c + t
                dst[e] = s * values[v & 15]
                dst[e + 16] = s * values[v >> 4]


@njit(cache=True, fastmath=FAST, parallel=True)
def _matmul_xs16(out, x, q, sc, d, book):
    float_matmul(out, x, _decode_row_xs16, (q, sc, d, book))


def xs16_layout(repack, note):
    """A Layout on IQ4_XS's 16-row planes and a book tag (repack(raw, cols) -> (q, sc, d, book)), with its GEMM."""
    return Layout(256, repack, _scratch_k, _mv_xs16, _matmul_xs16, "NIB16: 16 rows' blocks interleaved 4 bytes a row"
                  " + int8 scale per 32 + fp16 d per 256" + note + int_note(q8_k), q8_k, GEMM_XS16)


IQ4_XS = xs16_layout(_rp_iq4_xs, "")
