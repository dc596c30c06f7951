"""Q6_K in ROWS16 order: 16 rows' super-blocks interleaved, so that the 16 int32 lanes of a vpdpbusd are 16 rows.

The row kernel this replaced (a row's super-block a step, as _vnni.py's other K-quants) decoded the 1.1B model's
Q6_K matrices at 36 GB/s where the machine reads 55 (and Q4_K, interleaved, 42): every 64 codes cost it a vpmulld
and a scale shuffle, because its lanes span four 16-element groups with four scales. Here, as for Q4_K
(kquants_rows16.py), one vector holds 4 codes of each of 16 rows of one group: a group is 4 vpdpbusd and one vpmulld
by its 16 rows' scales (_vnni16.q6k_rows16_dot).

One record per group g of 16 rows (the last group zero-padded) and super-block s, w[g, s], 3392 bytes (16 x the
file's 210, padded to whole cache lines), read as one stream in address order (a record whose vectors the kernel
met out of address order streamed at two thirds of the row kernel's speed, though twice as fast in cache):
    bytes 832 q + ...    groups 4q .. 4q+3 (16 elements each), the codes in 64-byte vectors (byte 4 r + t of
                         chunk c: row r, element 4 c + t of a group):
        64 c             high 2 bits: group 4q + u in crumb u
        256 + 256 p + 64 c    low 4 bits: group 4q + 2p in the low nibble, group 4q + 2p + 1 in the high one
        768 + 16 u + r   the int8 scale of group 4q + u, row r
    3328 + 2 r           row r's fp16 d

Used where the CPU has an integer path (_isa.py; the Q6_K layout, kquants.py); decode, the integer prefill GEMM (a
record row decoded into _gemm.py's TILE order, the chunks as they are) and the float matmul read it.
"""
import numpy as np
from numba import njit, prange

from kvant.formats.blocks import block

from ._common import F32, f16_at, float_matmul, zeros_on_lines
from ._gemm import half_offsets, spread_codes, tiles
from . import _avx2, _vnni16
from ._isa import FAST, YMM
from ._vnni16 import Q6K_D as D, Q6K_QUAD as QUAD, Q6K_RECORD as RECORD, Q6K_SCALES as SCALES
from .actquant import q8_k, q8_k_codes
from .intdot import code_sums, k16_scratch
from .registry import Layout

Q6K = block("Q6_K")

GROUP = 16          # rows interleaved: the 16 int32 lanes of a vector
# the decode step per kernel path: 16-row steps on 512-bit values, on AVX2 written for 256-bit ones (_avx2.py)
_ROWS16_DOT = _avx2.q6k_rows16_dot if YMM else _vnni16.q6k_rows16_dot


@njit(cache=True, inline="always")
def _code_at(g, c, t):
    """(byte offset in a record of the low 4 bits, nibble shift, byte offset of the high 2 bits, crumb shift) of
    element 4 c + t of group g, before adding 4 r for the row."""
    q, u = g >> 2, g & 3
    return QUAD * q + 256 + 256 * (u >> 1) + 64 * c + t, 4 * (u & 1), QUAD * q + 64 * c + t, 2 * u


@njit(cache=True, inline="always")
def _scale_at(g):
    """Byte offset in a record of group g's scale, before adding the row."""
    return QUAD * (g >> 2) + SCALES + 16 * (g & 3)


@njit(cache=True, parallel=True)
def _repack(raw, w):
    """The file's super-block (210 bytes): ql 128, qh 64, int8 scales 16, fp16 d; element 128 R + 32 u + j is nibble
    u >> 1 of ql[64 R + 32 (u & 1) + j] and crumb u of qh[32 R + j]."""
    rows = raw.shape[0]
    for g in prange(w.shape[0]):
        for r in range(min(GROUP, rows - GROUP * g)):
            src = raw[GROUP * g + r]
            for s in range(w.shape[1]):
                o = Q6K.size * s
                dst = w[g, s]
                for e in range(256):
                    half, u, j = e >> 7, (e >> 5) & 3, e & 31
                    low = (src[o + Q6K.ql + 64 * half + 32 * (u & 1) + j] >> (4 * (u >> 1))) & 15
                    high = (src[o + Q6K.qh + 32 * half + j] >> (2 * u)) & 3
                    lo_at, lo_shift, hi_at, hi_shift = _code_at(e >> 4, (e >> 2) & 3, e & 3)
                    dst[lo_at + 4 * r] |= low << lo_shift
                    dst[hi_at + 4 * r] |= high << hi_shift
                for grp in range(16):
                    dst[_scale_at(grp) + r] = src[o + Q6K.scales + grp]
                dst[D + 2 * r], dst[D + 2 * r + 1] = src[o + Q6K.d], src[o + Q6K.d + 1]


def repack(raw, cols):
    w = zeros_on_lines(((raw.shape[0] + GROUP - 1) // GROUP, cols // 256, RECORD), np.uint8)
    _repack(raw, w)
    return (w,)


@njit(cache=True, fastmath=FAST, parallel=True)
def matvec(out, x, w, xq, xd, bs):
    q8_k_codes(xq, xd, x)
    code_sums(bs, xq)
    rows, nsb = out.shape[0], w.shape[1]
    for g in prange(w.shape[0]):
        _ROWS16_DOT(w[g], xq, xd, bs, nsb, out, GROUP * g, min(GROUP, rows - GROUP * g))


@njit(cache=True, fastmath=FAST)
def _decode_row(dst, row, w):
    """Row `row` as floats: d sc (code - 32). Per quad and chunk, one crumb byte and two nibble bytes are element
    4 c + t of the quad's four groups."""
    g, r = row // GROUP, row % GROUP
    for s in range(w.shape[1]):
        rec = w[g, s]
        d = f16_at(rec, D + 2 * r)
        for q in range(4):
            at = QUAD * q
            sc = at + SCALES + r
            sc0, sc1 = d * F32(np.int8(rec[sc])), d * F32(np.int8(rec[sc + 16]))
            sc2, sc3 = d * F32(np.int8(rec[sc + 32])), d * F32(np.int8(rec[sc + 48]))
            for c in range(4):
                for t in range(4):
                    o = at + 64 * c + 4 * r + t
                    hb, n0, n1 = rec[o], rec[o + 256], rec[o + 512]
                    e = 256 * s + 64 * q + 4 * c + t
                    dst[e] = sc0 * (F32((n0 & 15) | ((hb & 3) << 4)) - F32(32.0))
                    dst[e + 16] = sc1 * (F32((n0 >> 4) | (((hb >> 2) & 3) << 4)) - F32(32.0))
                    dst[e + 32] = sc2 * (F32((n1 & 15) | (((hb >> 4) & 3) << 4)) - F32(32.0))
                    dst[e + 48] = sc3 * (F32((n1 >> 4) | ((hb >> 6) << 4)) - F32(32.0))


@njit(cache=True, fastmath=FAST, parallel=True)
def matmul(out, x, w):
    """out[n, rows] = x @ W.T with float activations (QMatrix.matmul)."""
    float_matmul(out, x, _decode_row, (w,))


@njit(cache=True, fastmath=FAST)
def _tile(wt, ws, wm, r0, w):
    """The 16 rows at r0 (one record row) in _gemm.py's TILE order: a record's 64-byte chunk is already 4 codes of
    each of 16 rows, so TILE vector (32-block b, 4-element group c) is chunk c % 4 of 16-element group 2 b + c // 4,
    its crumb and nibble joined, as the code - 32 + 128 (tile_gemm_wide16's biased weights); ws the 16 rows' d * sc
    per 16-element half."""
    rec_row = w[r0 // GROUP]
    for s in range(rec_row.shape[0]):
        rec = rec_row[s]
        for bb in range(8):
            blk = 8 * s + bb
            q = bb >> 1
            for h in range(2):
                u = 2 * (bb & 1) + h            # the group within quad q
                for c in range(4):
                    hi = QUAD * q + 64 * c
                    lo = QUAD * q + 256 + 256 * (u >> 1) + 64 * c
                    dst = 512 * blk + 64 * (4 * h + c)
                    for k in range(64):
                        code = ((rec[lo + k] >> (4 * (u & 1))) & 15) | (((rec[hi + k] >> (2 * u)) & 3) << 4)
                        wt[dst + k] = code + 96
                sc = QUAD * q + SCALES + 16 * u
                for r in range(GROUP):
                    ws[32 * blk + 16 * h + r] = f16_at(rec, D + 2 * r) * F32(np.int8(rec[sc + r]))


@njit(cache=True, parallel=True)
def _gemm(out, xq, xd, xs, xm, w):
    tiles(out, xq, xd, half_offsets(xq, 128), xm, False, True, _tile, (w,), 2, True)


# The integer prefill GEMM (Layout.gemm's run): each 16-row record row decoded once into _gemm.py's TILE order
# (signed 6-bit weights + 128, a scale per 16) and every token multiplied by it (tile_gemm_wide16), as the IQ lattice
# types. The products are llama.cpp's up to float summation order (it sums a super-block's scaled 16-element integer
# sums in int32, this one per 16 in float).
gemm = spread_codes(_gemm)


LAYOUT = Layout(256, repack, k16_scratch, matvec, matmul, "ROWS16: 16 rows' 6-bit codes interleaved 4 bytes a row "
                "(4 low bits in nibbles, 2 high bits in crumbs), int8 scale per 16 + fp16 d per 256 (the file's 210 "
                "bytes), one record per 16 rows and super-block, int8 x Q8_K activations", q8_k, gemm)
