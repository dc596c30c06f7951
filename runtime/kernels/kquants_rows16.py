"""Q4_K in ROWS16 order: 16 rows' super-blocks interleaved, so that the 16 int32 lanes of a vpdpbusd are 16 rows.

The row-plane Q4_K kernel (_vnni._q5k_codegen's loop without qh) spent ~40 instructions per 256 weights on
per-block scale shuffles, multiplies and the row's final sum: at 2 threads it was compute-bound below the read
bandwidth on large matrices (the 1.1B model: 31 GB/s of 34-36). Here, as in llama.cpp's repacked q4_K_8x8 and in
_gemm.py's prefill tiles, one vector holds 4 codes of each of 16 rows: a 32-block of 16 rows is 8 vpdpbusd against
4-code broadcasts of the activations, one vpmulld by the 16 rows' block scales, and no horizontal sum
(_vnni16.q4k_rows16_dot). A super-block's 2048 bytes are its 8 blocks in blocks16.py's NIB16 order.

Per group g of 16 rows (the last group zero-padded) and super-block s:
    q[g, s]   2048 bytes: block b, chunk c, row r, byte t at 256 b + 64 c + 4 r + t; low nibble element
              32 b + 4 c + t, high nibble element 32 b + 16 + 4 c + t
    sm[g, s]  192 bytes, the 6-bit scales and mins, block b of row r: byte 16 b + r = scale | (min >> 4) << 6,
              and the min's low 4 bits in byte 128 + 16 (b & 3) + r, low nibble for b < 4, high for b >= 4
    d[g, s], dm[g, s]    the rows' fp16 d and dmin bits
144 bytes per row and super-block, as the file.

Used where the CPU has AVX-512 VNNI (the Q4_K layout, kquants.py); decode, the integer prefill GEMM and the float
matmul all read this order.
"""
import numpy as np
from numba import njit, prange

from ._common import F32, float_matmul, scale_min_k4
from ._gemm import tiles
from ._ir import widen
from ._vnni16 import nib16_tile, q4k_rows16_dot
from .actquant import q8_k, q8_k_codes
from .intdot import code_sums
from .registry import Layout

GROUP = 16      # rows interleaved: the 16 int32 lanes of a vector


@njit(cache=True, parallel=True)
def _repack(raw, q, sm, d, dm):
    """The file's qs are 32 bytes per 64 elements, block 2c in the low nibbles and 2c+1 in the high ones: block b's
    element i is in byte 32 (b >> 1) + i, nibble b & 1."""
    rows = raw.shape[0]
    for g in prange(q.shape[0]):
        for r in range(min(GROUP, rows - GROUP * g)):
            src = raw[GROUP * g + r]
            for s in range(q.shape[1]):
                o = 144 * s
                d[g, s, r] = np.uint16(src[o]) | (np.uint16(src[o + 1]) << 8)
                dm[g, s, r] = np.uint16(src[o + 2]) | (np.uint16(src[o + 3]) << 8)
                for b in range(8):
                    scale, mn = scale_min_k4(src, o + 4, b)
                    sm[g, s, 16 * b + r] = scale | ((mn >> 4) << 6)
                    sm[g, s, 128 + 16 * (b & 3) + r] |= (mn & 15) << (4 * (b >> 2))
                    base, shift = o + 16 + 32 * (b >> 1), 4 * (b & 1)
                    for i in range(16):
                        lo = (src[base + i] >> shift) & 15
                        hi = (src[base + 16 + i] >> shift) & 15
                        q[g, s, 256 * b + 64 * (i >> 2) + 4 * r + (i & 3)] = lo | (hi << 4)


def repack(raw, cols):
    groups, nsb = (raw.shape[0] + GROUP - 1) // GROUP, cols // 256
    q = np.zeros((groups, nsb, 2048), np.uint8)
    sm = np.zeros((groups, nsb, 192), np.uint8)
    d, dm = np.zeros((groups, nsb, GROUP), np.uint16), np.zeros((groups, nsb, GROUP), np.uint16)
    _repack(raw, q, sm, d, dm)
    return q, sm, d, dm


def scratch(cols):
    """Q8_K codes in element order, scale per 32, exact int32 code sums per 32."""
    return np.empty(cols, np.int8), np.empty(cols // 32, np.float32), np.empty(cols // 32, np.int32)


@njit(cache=True, fastmath=True, parallel=True)
def matvec(out, x, q, sm, d, dm, xq, xd, bs):
    q8_k_codes(xq, xd, x)
    code_sums(bs, xq)
    rows, nsb = out.shape[0], q.shape[1]
    for g in prange(q.shape[0]):
        q4k_rows16_dot(q[g], sm[g], d[g], dm[g], xq, xd, bs, nsb, out, GROUP * g, min(GROUP, rows - GROUP * g))


@njit(cache=True, inline="always")
def _scale_min(sm, s, b, r):
    """Block b's 6-bit scale and min of row r from the packed sm plane."""
    a = sm[s, 16 * b + r]
    lo = (sm[s, 128 + 16 * (b & 3) + r] >> (4 * (b >> 2))) & 15
    return F32(a & 63), F32(lo | ((a >> 6) << 4))


# ---------------------------------------------------------------- prefill

@njit(cache=True)
def _tile(wt, ws, wm, r0, q, sm, d, dm):
    """The group of rows r0.. as _gemm.py's TILE order (wt[512 B + 64 k + 4 r + t]: row r, element 32 B + 4 k + t)
    with the block scales ws = d * sc and mins wm = -dmin * mn (16 B + r)."""
    g = r0 // GROUP
    nb = 8 * q.shape[1]
    nib16_tile(wt, q[g].reshape(nb, 256), nb, 0)
    for s in range(q.shape[1]):
        for b in range(8):
            blk = 8 * s + b
            for r in range(GROUP):
                scale, mn = _scale_min(sm[g], s, b, r)
                ws[GROUP * blk + r] = widen(d[g, s, r]) * scale
                wm[GROUP * blk + r] = -widen(dm[g, s, r]) * mn


@njit(cache=True, parallel=True)
def _gemm(out, xq, xd, xs, xm, q, sm, d, dm):
    tiles(out, xq, xd, np.zeros_like(xs), xm, True, _tile, (q, sm, d, dm))      # codes as they are: no offset


def gemm(out, codes, q, sm, d, dm):
    """The integer prefill GEMM (_gemm.INT_GEMM's run): codes = Q8_K codes of the tokens (_gemm.quantize)."""
    _gemm(out, *codes, q, sm, d, dm)


@njit(cache=True, fastmath=True)
def _decode_row(dst, row, q, sm, d, dm):
    """Row `row` as floats: d sc code - dmin mn."""
    g, r = row // GROUP, row % GROUP
    for s in range(q.shape[1]):
        for b in range(8):
            scale, mn = _scale_min(sm[g], s, b, r)
            a = widen(d[g, s, r]) * scale
            m = widen(dm[g, s, r]) * mn
            for c in range(4):
                for t in range(4):
                    v = q[g, s, 256 * b + 64 * c + 4 * r + t]
                    e = 256 * s + 32 * b + 4 * c + t
                    dst[e] = a * F32(v & 15) - m
                    dst[e + 16] = a * F32(v >> 4) - m


@njit(cache=True, fastmath=True, parallel=True)
def matmul(out, x, q, sm, d, dm):
    """out[n, rows] = x @ W.T with float activations (QMatrix.matmul)."""
    float_matmul(out, x, _decode_row, (q, sm, d, dm))


LAYOUT = Layout(256, repack, scratch, matvec, matmul, "ROWS16: 16 rows' qs interleaved 4 bytes a row, 6-bit scale "
                "and min per 32 packed in 12 bytes + fp16 d, dmin per 256 (the file's 144 bytes), int8 x Q8_K "
                "activations (VNNI)", q8_k)
