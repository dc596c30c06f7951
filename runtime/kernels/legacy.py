"""32-element block types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL.

Repack (once, parallel over rows): fp16 scales widened to f32 per block; Q8_0 codes to one int8 row; nibbles
concatenated into a NIB plane (the file's own order inside a block); the Q5 high bits (the file's qh bytes) into a
BITS plane. Extra memory over the file: Q8_0 1.06x, Q4_0 / IQ4_NL 1.11x, Q4_1 1.20x, Q5_0 1.09x, Q5_1 1.17x.
"""
import numpy as np
from numba import njit, prange

from ._common import (F32, ROW_TILE, bits_dot, f16_at, gemm_tile, n_chunks, i8_dot, nib_dot, prep_bits, prep_nib,
                      prep_pairs, tile_span)
from ._ir import ubits
from .registry import Layout, register

KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32)
_IQ4_LO = KVALUES_IQ4NL[np.arange(256) & 15].copy()   # byte -> value of its low nibble
_IQ4_HI = KVALUES_IQ4NL[np.arange(256) >> 4].copy()


# ---------------------------------------------------------------- repack

@njit(cache=True, parallel=True)
def _repack_blocks(raw, bsize, q, qoff, qlen, d, m, moff, h, hoff):
    """Per 32-element block of bsize bytes: f16 d at 0, f16 m at moff (if m has columns), 4 qh bytes at hoff
    (if h has columns), qlen code bytes at qoff -> q."""
    nb = d.shape[1]
    for r in prange(raw.shape[0]):
        for b in range(nb):
            o = b * bsize
            d[r, b] = f16_at(raw, r, o)
            if m.shape[1]:
                m[r, b] = f16_at(raw, r, o + moff)
            if h.shape[1]:
                for j in range(4):
                    h[r, 4 * b + j] = raw[r, o + hoff + j]
            for j in range(qlen):
                q[r, qlen * b + j] = raw[r, o + qoff + j]


def _arrays(raw, cols, bsize, qlen, qoff, moff=0, hoff=0, signed=False):
    rows = raw.shape[0]
    nb = cols // 32
    q = np.empty((rows, qlen * nb), np.int8 if signed else np.uint8)
    d = np.empty((rows, nb), np.float32)
    m = np.empty((rows, nb if moff else 0), np.float32)
    h = np.empty((rows, 4 * nb if hoff else 0), np.uint8)
    _repack_blocks(raw, bsize, q.view(np.uint8), qoff, qlen, d, m, moff, h, hoff)
    return q, d, m, h


# ---------------------------------------------------------------- activation scratch

def _nib_scratch(cols):
    return np.empty(cols // 2, np.float32), np.empty(cols // 2, np.float32), np.empty(cols // 32, np.float32)


def _nib_bits_scratch(cols):
    return _nib_scratch(cols) + (np.empty((8, cols // 8), np.float32),)


def _pairs_scratch(cols):
    return np.empty(cols // 2, np.float32), np.empty(cols // 2, np.float32)


# ---------------------------------------------------------------- matvec

@njit(cache=True, fastmath=True, parallel=True)
def _mv_q8_0(out, x, q, d):
    for r in prange(out.shape[0]):
        out[r] = i8_dot(q[r], d[r], x, 5)


@njit(cache=True, fastmath=True)
def _gdot(a, b):
    s = F32(0.0)
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


@njit(cache=True, fastmath=True, parallel=True)
def _mv_q4_0(out, x, q, d, xa, xb, xs):
    prep_nib(xa, xb, xs, x)
    for r in prange(out.shape[0]):
        out[r] = nib_dot(q[r], d[r], xa, xb) - F32(8.0) * _gdot(d[r], xs)


@njit(cache=True, fastmath=True, parallel=True)
def _mv_q4_1(out, x, q, d, m, xa, xb, xs):
    prep_nib(xa, xb, xs, x)
    for r in prange(out.shape[0]):
        out[r] = nib_dot(q[r], d[r], xa, xb) + _gdot(m[r], xs)


@njit(cache=True, fastmath=True, parallel=True)
def _mv_q5_0(out, x, q, d, h, xa, xb, xs, y):
    prep_nib(xa, xb, xs, x)
    prep_bits(y, x, F32(16.0))
    for r in prange(out.shape[0]):
        out[r] = nib_dot(q[r], d[r], xa, xb) + bits_dot(h[r], d[r], y, 2) - F32(16.0) * _gdot(d[r], xs)


@njit(cache=True, fastmath=True, parallel=True)
def _mv_q5_1(out, x, q, d, m, h, xa, xb, xs, y):
    prep_nib(xa, xb, xs, x)
    prep_bits(y, x, F32(16.0))
    for r in prange(out.shape[0]):
        out[r] = nib_dot(q[r], d[r], xa, xb) + bits_dot(h[r], d[r], y, 2) + _gdot(m[r], xs)


@njit(cache=True, fastmath=True)
def iq4_dot(q, d, xlo, xhi):
    s = F32(0.0)
    for i in range(q.shape[0]):
        b = q[i]
        s += d[i >> 4] * (_IQ4_LO[b] * xlo[i] + _IQ4_HI[b] * xhi[i])
    return s


@njit(cache=True, fastmath=True, parallel=True)
def _mv_iq4_nl(out, x, q, d, xlo, xhi):
    prep_pairs(xlo, xhi, x)
    for r in prange(out.shape[0]):
        out[r] = iq4_dot(q[r], d[r], xlo, xhi)


# ---------------------------------------------------------------- row decoders (natural order)

@njit(cache=True, fastmath=True)
def _dec_q8_0(dst, r, q, d):
    for i in range(dst.shape[0]):
        dst[i] = d[r, i >> 5] * F32(q[r, i])


@njit(cache=True, fastmath=True)
def dec_nib(dst, qr, dr, mr, off):
    """dst = d * (code + off) + m per 32-element block of a NIB row (mr may be empty)."""
    for b in range(dr.shape[0]):
        db = dr[b]
        mb = mr[b] if mr.shape[0] else F32(0.0)
        for j in range(16):
            v = qr[16 * b + j]
            dst[32 * b + j] = db * (ubits(v, 0, 15) + off) + mb
            dst[32 * b + 16 + j] = db * (ubits(v, 4, 15) + off) + mb


@njit(cache=True, fastmath=True)
def dec_nib_bits(dst, qr, hr, dr, mr, off):
    """dst = d * (nibble + 16 * bit + off) + m."""
    dec_nib(dst, qr, dr, mr, off)
    for k in range(hr.shape[0]):
        v = hr[k]
        db = F32(16.0) * dr[k >> 2]
        for t in range(8):
            dst[8 * k + t] += db * ubits(v, t, 1)


@njit(cache=True, fastmath=True)
def dec_iq4(dst, qr, dr):
    for b in range(dr.shape[0]):
        db = dr[b]
        for j in range(16):
            v = qr[16 * b + j]
            dst[32 * b + j] = db * _IQ4_LO[v]
            dst[32 * b + 16 + j] = db * _IQ4_HI[v]


@njit(cache=True, fastmath=True)
def _dec_q4_0(dst, r, q, d):
    dec_nib(dst, q[r], d[r], d[r, :0], F32(-8.0))


@njit(cache=True, fastmath=True)
def _dec_q4_1(dst, r, q, d, m):
    dec_nib(dst, q[r], d[r], m[r], F32(0.0))


@njit(cache=True, fastmath=True)
def _dec_q5_0(dst, r, q, d, h):
    dec_nib_bits(dst, q[r], h[r], d[r], d[r, :0], F32(-16.0))


@njit(cache=True, fastmath=True)
def _dec_q5_1(dst, r, q, d, m, h):
    dec_nib_bits(dst, q[r], h[r], d[r], m[r], F32(0.0))


@njit(cache=True, fastmath=True)
def _dec_iq4_nl(dst, r, q, d):
    dec_iq4(dst, q[r], d[r])


@njit(cache=True, fastmath=True, parallel=True)
def _mm_q8_0(out, x, q, d):
    nt = n_chunks(out.shape[1])
    for ch in prange(nt):
        w = np.empty((ROW_TILE, x.shape[1]), np.float32)
        t0, t1 = tile_span(ch, nt, out.shape[1])
        for t in range(t0, t1):
            r0 = t * ROW_TILE
            nr = min(ROW_TILE, out.shape[1] - r0)
            for j in range(nr):
                _dec_q8_0(w[j], r0 + j, q, d)
            gemm_tile(out, x, w, r0, nr)


@njit(cache=True, fastmath=True, parallel=True)
def _mm_q4_0(out, x, q, d):
    nt = n_chunks(out.shape[1])
    for ch in prange(nt):
        w = np.empty((ROW_TILE, x.shape[1]), np.float32)
        t0, t1 = tile_span(ch, nt, out.shape[1])
        for t in range(t0, t1):
            r0 = t * ROW_TILE
            nr = min(ROW_TILE, out.shape[1] - r0)
            for j in range(nr):
                _dec_q4_0(w[j], r0 + j, q, d)
            gemm_tile(out, x, w, r0, nr)


@njit(cache=True, fastmath=True, parallel=True)
def _mm_q4_1(out, x, q, d, m):
    nt = n_chunks(out.shape[1])
    for ch in prange(nt):
        w = np.empty((ROW_TILE, x.shape[1]), np.float32)
        t0, t1 = tile_span(ch, nt, out.shape[1])
        for t in range(t0, t1):
            r0 = t * ROW_TILE
            nr = min(ROW_TILE, out.shape[1] - r0)
            for j in range(nr):
                _dec_q4_1(w[j], r0 + j, q, d, m)
            gemm_tile(out, x, w, r0, nr)


@njit(cache=True, fastmath=True, parallel=True)
def _mm_q5_0(out, x, q, d, h):
    nt = n_chunks(out.shape[1])
    for ch in prange(nt):
        w = np.empty((ROW_TILE, x.shape[1]), np.float32)
        t0, t1 = tile_span(ch, nt, out.shape[1])
        for t in range(t0, t1):
            r0 = t * ROW_TILE
            nr = min(ROW_TILE, out.shape[1] - r0)
            for j in range(nr):
                _dec_q5_0(w[j], r0 + j, q, d, h)
            gemm_tile(out, x, w, r0, nr)


@njit(cache=True, fastmath=True, parallel=True)
def _mm_q5_1(out, x, q, d, m, h):
    nt = n_chunks(out.shape[1])
    for ch in prange(nt):
        w = np.empty((ROW_TILE, x.shape[1]), np.float32)
        t0, t1 = tile_span(ch, nt, out.shape[1])
        for t in range(t0, t1):
            r0 = t * ROW_TILE
            nr = min(ROW_TILE, out.shape[1] - r0)
            for j in range(nr):
                _dec_q5_1(w[j], r0 + j, q, d, m, h)
            gemm_tile(out, x, w, r0, nr)


@njit(cache=True, fastmath=True, parallel=True)
def _mm_iq4_nl(out, x, q, d):
    nt = n_chunks(out.shape[1])
    for ch in prange(nt):
        w = np.empty((ROW_TILE, x.shape[1]), np.float32)
        t0, t1 = tile_span(ch, nt, out.shape[1])
        for t in range(t0, t1):
            r0 = t * ROW_TILE
            nr = min(ROW_TILE, out.shape[1] - r0)
            for j in range(nr):
                _dec_iq4_nl(w[j], r0 + j, q, d)
            gemm_tile(out, x, w, r0, nr)


# ---------------------------------------------------------------- registration

def _rp_q8_0(raw, cols):
    q, d, _, _ = _arrays(raw, cols, 34, 32, 2, signed=True)
    return q, d


def _rp_q4_0(raw, cols):
    q, d, _, _ = _arrays(raw, cols, 18, 16, 2)
    return q, d


def _rp_q4_1(raw, cols):
    q, d, m, _ = _arrays(raw, cols, 20, 16, 4, moff=2)
    return q, d, m


def _rp_q5_0(raw, cols):
    q, d, _, h = _arrays(raw, cols, 22, 16, 6, hoff=2)
    return q, d, h


def _rp_q5_1(raw, cols):
    q, d, m, h = _arrays(raw, cols, 24, 16, 8, moff=2, hoff=4)
    return q, d, m, h


def _rp_iq4_nl(raw, cols):
    q, d, _, _ = _arrays(raw, cols, 18, 16, 2)
    return q, d


register("Q8_0", Layout(32, _rp_q8_0, lambda c: (), _mv_q8_0, _mm_q8_0,
                        "I8 codes + f32 d per 32"))
register("Q4_0", Layout(32, _rp_q4_0, _nib_scratch, _mv_q4_0, _mm_q4_0,
                        "NIB + f32 d per 32; -8 folded out as -8 d sum(x)"))
register("Q4_1", Layout(32, _rp_q4_1, _nib_scratch, _mv_q4_1, _mm_q4_1,
                        "NIB + f32 d, m per 32"))
register("Q5_0", Layout(32, _rp_q5_0, _nib_bits_scratch, _mv_q5_0, _mm_q5_0,
                        "NIB (low 4 bits) + BITS (5th bit) + f32 d per 32"))
register("Q5_1", Layout(32, _rp_q5_1, _nib_bits_scratch, _mv_q5_1, _mm_q5_1,
                        "NIB + BITS + f32 d, m per 32"))
register("IQ4_NL", Layout(32, _rp_iq4_nl, _pairs_scratch, _mv_iq4_nl, _mm_iq4_nl,
                          "NIB + f32 d per 32; codebook by table lookup"))
