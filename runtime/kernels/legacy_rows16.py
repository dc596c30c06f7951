"""Q4_0, Q4_1 and IQ4_NL in NIB16 order: 16 rows' 32-blocks interleaved, so that the 16 int32 lanes of a vpdpbusd
are 16 rows (_vnni16.py says why; kquants_rows16.py does the same for Q4_K).

Per group g of 16 rows (the last group zero-padded) and 32-block b:
    q[g, b]   256 bytes: chunk c, row r, byte t at 64 c + 4 r + t = the row's block byte 4 c + t as the file has
              it (low nibble element 4 c + t, high nibble element 16 + 4 c + t)
    d[g, b]   the 16 rows' fp16 d bits (and Q4_1's m[g, b] the same)
The file's bytes per row and block (18, Q4_1 20). Used where the CPU has AVX-512 VNNI (legacy.py registers it);
decode, the integer prefill GEMM and the float matmul all read this order.

What differs between the three types is data, not code (TYPES): the code offset the integer sums take out
(-offset * sum of the activation codes per block), whether the codes stand for the IQ4 codebook (looked up + 128),
and Q4_1's min (m times Q8_1's fp16 block sum, as llama.cpp).
"""
import numpy as np
from numba import njit, prange

from ._common import F32, float_matmul
from ._gemm import _offsets, register_gemm, tiles
from ._ir import widen
from ._vnni16 import iq4_16_dot, nib16_dot, nib16_min_dot, nib16_tile
from .actquant import q8_0, q8_codes
from .intdot import IQ4_VALUES
from .registry import Layout

GROUP = 16      # rows interleaved: the 16 int32 lanes of a vector


@njit(cache=True, parallel=True)
def _repack(raw, bsize, qoff, q, d, m):
    """Blocks of bsize bytes: fp16 d at 0, fp16 m at 2 (if m has room), 16 code bytes at qoff."""
    rows, nb = raw.shape[0], q.shape[1]
    has_m = m.shape[2] > 0
    for g in prange(q.shape[0]):
        for r in range(min(GROUP, rows - GROUP * g)):
            src = raw[GROUP * g + r]
            for b in range(nb):
                o = bsize * b
                d[g, b, r] = np.uint16(src[o]) | (np.uint16(src[o + 1]) << 8)
                if has_m:
                    m[g, b, r] = np.uint16(src[o + 2]) | (np.uint16(src[o + 3]) << 8)
                for i in range(16):
                    q[g, b, 64 * (i >> 2) + 4 * r + (i & 3)] = src[o + qoff + i]


def _rp(bsize, qoff, has_m):
    def repack(raw, cols):
        groups, nb = (raw.shape[0] + GROUP - 1) // GROUP, cols // 32
        q = np.zeros((groups, nb, 256), np.uint8)
        d = np.zeros((groups, nb, GROUP), np.uint16)
        m = np.zeros((groups, nb, GROUP if has_m else 0), np.uint16)
        _repack(raw, bsize, qoff, q, d, m)
        return (q, d, m) if has_m else (q, d)
    return repack


def _scratch(cols):
    """Q8_0 codes in element order, their scale per 32, Q8_1's fp16 block sums, -offset * code sum per 32."""
    nb = cols // 32
    return np.empty(cols, np.int8), np.empty(nb, np.float32), np.empty(nb, np.float32), np.empty(nb, np.int32)


@njit(cache=True, inline="always")
def _code_offsets(xo, xq, off):
    for b in range(xo.shape[0]):
        t = 0
        for j in range(32 * b, 32 * b + 32):
            t += np.int32(xq[j])
        xo[b] = -off * t


# ---------------------------------------------------------------- decode

@njit(cache=True, fastmath=True, parallel=True)
def _mv_q4_0(out, x, q, d, xq, xd, xs, xo):
    q8_codes(xq, xd, xs[:0], x)
    _code_offsets(xo, xq, 8)
    rows, nb = out.shape[0], xd.shape[0]
    for g in prange(q.shape[0]):
        nib16_dot(q[g], d[g], d[g], xq, xd, xo, xs, nb, out, GROUP * g, min(GROUP, rows - GROUP * g))


@njit(cache=True, fastmath=True, parallel=True)
def _mv_q4_1(out, x, q, d, m, xq, xd, xs, xo):
    q8_codes(xq, xd, xs, x)
    xo[:] = 0
    rows, nb = out.shape[0], xd.shape[0]
    for g in prange(q.shape[0]):
        nib16_min_dot(q[g], d[g], m[g], xq, xd, xo, xs, nb, out, GROUP * g, min(GROUP, rows - GROUP * g))


@njit(cache=True, fastmath=True, parallel=True)
def _mv_iq4_nl(out, x, q, d, xq, xd, xs, xo):
    q8_codes(xq, xd, xs[:0], x)
    _code_offsets(xo, xq, 128)
    rows, nb = out.shape[0], xd.shape[0]
    for g in prange(q.shape[0]):
        iq4_16_dot(q[g], d[g], d[g], xq, xd, xo, xs, nb, out, GROUP * g, min(GROUP, rows - GROUP * g))


# ---------------------------------------------------------------- prefill

@njit(cache=True)
def _tile(wt, ws, wm, r0, q, d, m, iq4, has_min):
    """The group at rows r0.. in _gemm.py's TILE order, block scales ws (mins wm) at 16 b + r."""
    g = r0 // GROUP
    nib16_tile(wt, q[g], q.shape[1], iq4)
    for b in range(q.shape[1]):
        for r in range(GROUP):
            ws[GROUP * b + r] = widen(d[g, b, r])
            if has_min:
                wm[GROUP * b + r] = widen(m[g, b, r])


@njit(cache=True, parallel=True)
def _gemm(out, xq, xd, xs, xm, q, d, m, off, iq4, has_min):
    tiles(out, xq, xd, _offsets(xs, off), xm, has_min, _tile, (q, d, m, iq4, has_min))


@njit(cache=True, fastmath=True)
def _decode_row(dst, row, q, d, m, off, iq4, has_min):
    """Row `row` as floats: d (code - off) (+ m), or d * codebook value."""
    g, r = row // GROUP, row % GROUP
    for b in range(q.shape[1]):
        s = widen(d[g, b, r])
        add = widen(m[g, b, r]) if has_min else -s * F32(off)
        for c in range(4):
            for t in range(4):
                v = q[g, b, 64 * c + 4 * r + t]
                e = 32 * b + 4 * c + t
                if iq4:
                    dst[e] = s * F32(IQ4_VALUES[v & 15])
                    dst[e + 16] = s * F32(IQ4_VALUES[v >> 4])
                else:
                    dst[e] = s * F32(v & 15) + add
                    dst[e + 16] = s * F32(v >> 4) + add


@njit(cache=True, fastmath=True, parallel=True)
def _matmul(out, x, q, d, m, off, iq4, has_min):
    float_matmul(out, x, _decode_row, (q, d, m, off, iq4, has_min))


# ---------------------------------------------------------------- the three types

# name: (file block bytes, code offset in the block, has a min, code offset in the sums, IQ4 codebook, matvec)
TYPES = {
    "Q4_0": (18, 2, False, 8, 0, _mv_q4_0),
    "Q4_1": (20, 4, True, 0, 0, _mv_q4_1),
    "IQ4_NL": (18, 2, False, 128, 1, _mv_iq4_nl),
}


def _runs(off, iq4, has_min):
    """matmul(out, x, *arrays) and the GEMM's run(out, codes, *arrays) of one type (m = d where it has none)."""
    def matmul(out, x, q, d, m=None):
        _matmul(out, x, q, d, d if m is None else m, off, iq4, has_min)

    def gemm(out, codes, q, d, m=None):
        _gemm(out, *codes, q, d, d if m is None else m, off, iq4, has_min)
    return matmul, gemm


def register_all(register):
    """Register the NIB16 layouts (decode and float matmul) and their integer GEMMs."""
    for name, (bsize, qoff, has_min, off, iq4, matvec) in TYPES.items():
        matmul, gemm = _runs(off, iq4, has_min)
        register(name, Layout(32, _rp(bsize, qoff, has_min), _scratch, matvec, matmul,
                              "NIB16: 16 rows' blocks interleaved 4 bytes a row + fp16 d" + (", m" if has_min else "")
                              + " per 32, int8 x Q8_0 activations (VNNI)", q8_0))
        register_gemm(name, "q8_0", gemm)
