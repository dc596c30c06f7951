"""Q4_K in ROWS16 order: 16 rows' super-blocks interleaved, so that the 16 int32 lanes of a vpdpbusd are 16 rows.

The row-plane Q4_K kernel (_vnni._q5k_codegen's loop without qh) spent ~40 instructions per 256 weights on
per-block scale shuffles, multiplies and the row's final sum: at 2 threads it was compute-bound below the read
bandwidth on large matrices (the 1.1B model: 31 GB/s of 34-36). Here, as in llama.cpp's repacked q4_K_8x8 and in
_gemm.py's prefill tiles, one vector holds 4 codes of each of 16 rows: a 32-block of 16 rows is 8 vpdpbusd against
4-code broadcasts of the activations, one vpmulld by the 16 rows' block scales, and no horizontal sum
(_vnni16.q4k_rows16_dot; on AVX2 _avx2.py's). A super-block's 2048 code bytes are its 8 blocks in blocks16.py's
NIB16 order.

One array w (groups, super-blocks, 2304 bytes), so that a decode reads one stream per thread (four planes, one
for the codes and three small ones for scales, read at 37 GB/s where one stream reads at 52). The scales come
first, so the kernels read a record in address order: with the codes first and the scales after them, the AVX2
decode step read its records from memory at 61-69% of a streaming read, 92% in this order (this CPU's prefetchers
follow one ascending stream per core). Per group g of 16 rows (the last group zero-padded) and super-block s,
w[g, s] holds:
    bytes 0-191       the 6-bit scales and mins, block b of row r: byte 16 b + r = scale | (min >> 4) << 6,
                      and the min's low 4 bits in byte 128 + 16 (b & 3) + r, low nibble for b < 4, high for b >= 4
    bytes 192-255     the rows' fp16 d (192 + 2 r) and dmin (224 + 2 r), little-endian
    bytes 256-2303    the codes: block b, chunk c, row r, byte t at 256 + 256 b + 64 c + 4 r + t; low nibble
                      element 32 b + 4 c + t, high nibble element 32 b + 16 + 4 c + t
144 bytes per row and super-block, as the file.

Used where the CPU has an integer path (_isa.py; the Q4_K layout, kquants.py); decode, the integer prefill GEMM and the
float matmul all read this order.
"""
import numpy as np
from numba import njit, prange

from kvant.formats.blocks import block

from ._common import F32, f16_at, float_matmul, scale_min_k4, zeros_on_lines
from . import _avx2, _vnni16
from ._gemm import spread_codes, tiles
from ._isa import FAST, YMM
from ._vnni16 import Q4K_CODES as CODES, Q4K_D as D, Q4K_DM as DM, Q4K_RECORD as SB, Q4K_SM as SM, nib16_tile
from .actquant import q8_k, q8_k_codes
from .intdot import code_sums
from .registry import Layout

Q4K = block("Q4_K")

GROUP = 16      # rows interleaved: the 16 int32 lanes of a vector
# the decode step per kernel path: 16-row steps on 512-bit values, on AVX2 written for 256-bit ones (_avx2.py)
_ROWS16_DOT = _avx2.q4k_rows16_dot if YMM else _vnni16.q4k_rows16_dot


@njit(cache=True, parallel=True)
def _repack(raw, w):
    """The file's qs are 32 bytes per 64 elements, block 2c in the low nibbles and 2c+1 in the high ones: block b's
    element i is in byte 32 (b >> 1) + i, nibble b & 1."""
    rows = raw.shape[0]
    for g in prange(w.shape[0]):
        for r in range(min(GROUP, rows - GROUP * g)):
            src = raw[GROUP * g + r]
            for s in range(w.shape[1]):
                o = Q4K.size * s
                dst = w[g, s]
                dst[D + 2 * r], dst[D + 2 * r + 1] = src[o + Q4K.d], src[o + Q4K.d + 1]
                dst[DM + 2 * r], dst[DM + 2 * r + 1] = src[o + Q4K.dmin], src[o + Q4K.dmin + 1]
                for b in range(8):
                    scale, mn = scale_min_k4(src, o + Q4K.scales, b)
                    dst[SM + 16 * b + r] = scale | ((mn >> 4) << 6)
                    dst[SM + 128 + 16 * (b & 3) + r] |= (mn & 15) << (4 * (b >> 2))
                    base, shift = o + Q4K.qs + 32 * (b >> 1), 4 * (b & 1)
                    for i in range(16):
                        lo = (src[base + i] >> shift) & 15
                        hi = (src[base + 16 + i] >> shift) & 15
                        dst[CODES + 256 * b + 64 * (i >> 2) + 4 * r + (i & 3)] = lo | (hi << 4)


def repack(raw, cols):
    w = zeros_on_lines(((raw.shape[0] + GROUP - 1) // GROUP, cols // 256, SB), np.uint8)
    _repack(raw, w)
    return (w,)


def scratch(cols):
    """Q8_K codes in element order, scale per 32, exact int32 code sums per 32."""
    return np.empty(cols, np.int8), np.empty(cols // 32, np.float32), np.empty(cols // 32, np.int32)


@njit(cache=True, fastmath=FAST, parallel=True)
def matvec(out, x, w, xq, xd, bs):
    q8_k_codes(xq, xd, x)
    code_sums(bs, xq)
    rows, nsb = out.shape[0], w.shape[1]
    for g in prange(w.shape[0]):
        _ROWS16_DOT(w[g], xq, xd, bs, nsb, out, GROUP * g, min(GROUP, rows - GROUP * g))


@njit(cache=True, inline="always")
def _scale_min(rec, b, r):
    """Block b's 6-bit scale and min of row r from a super-block record."""
    a = rec[SM + 16 * b + r]
    lo = (rec[SM + 128 + 16 * (b & 3) + r] >> (4 * (b >> 2))) & 15
    return F32(a & 63), F32(lo | ((a >> 6) << 4))


@njit(cache=True, inline="always")
def _d_dmin(rec, r):
    """Row r's d and dmin from a super-block record."""
    return f16_at(rec, D + 2 * r), f16_at(rec, DM + 2 * r)


# ---------------------------------------------------------------- prefill

@njit(cache=True)
def _tile(wt, ws, wm, r0, w):
    """The group of rows r0.. as _gemm.py's TILE order (wt[512 B + 64 k + 4 r + t]: row r, element 32 B + 4 k + t)
    with the block scales ws = d * sc and mins wm = -dmin * mn (16 B + r)."""
    g = r0 // GROUP
    for s in range(w.shape[1]):
        rec = w[g, s]
        nib16_tile(wt[4096 * s:], rec[CODES:].reshape(8, 256), 8, 0)
        for r in range(GROUP):
            d, dm = _d_dmin(rec, r)
            for b in range(8):
                scale, mn = _scale_min(rec, b, r)
                ws[GROUP * (8 * s + b) + r] = d * scale
                wm[GROUP * (8 * s + b) + r] = -dm * mn


@njit(cache=True, parallel=True)
def _gemm(out, xq, xd, xs, xm, w):
    tiles(out, xq, xd, np.zeros_like(xs), xm, True, False, _tile, (w,))      # codes as they are: no offset


gemm = spread_codes(_gemm)        # the integer prefill GEMM (Layout.gemm), Q8_K codes


@njit(cache=True, fastmath=FAST)
def _decode_row(dst, row, w):
    """Row `row` as floats: d sc code - dmin mn."""
    g, r = row // GROUP, row % GROUP
    for s in range(w.shape[1]):
        rec = w[g, s]
        d, dm = _d_dmin(rec, r)
        for b in range(8):
            scale, mn = _scale_min(rec, b, r)
            a = d * scale
            m = dm * mn
            for c in range(4):
                for t in range(4):
                    v = rec[CODES + 256 * b + 64 * c + 4 * r + t]
                    e = 256 * s + 32 * b + 4 * c + t
                    dst[e] = a * F32(v & 15) - m
                    dst[e + 16] = a * F32(v >> 4) - m


@njit(cache=True, fastmath=FAST, parallel=True)
def matmul(out, x, w):
    """out[n, rows] = x @ W.T with float activations (QMatrix.matmul)."""
    float_matmul(out, x, _decode_row, (w,))


LAYOUT = Layout(256, repack, scratch, matvec, matmul, "ROWS16: 16 rows' qs interleaved 4 bytes a row, 6-bit scale "
                "and min per 32 packed in 12 bytes + fp16 d, dmin per 256 (the file's 144 bytes), one record per "
                "16 rows and super-block, int8 x Q8_K activations", q8_k, gemm)
