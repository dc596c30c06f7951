"""32-element block types: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, as row planes with float activations.

Where the CPU has an integer path all six run from blocks16.py instead (the file's bytes with 16 rows interleaved,
integer dot products as llama.cpp's); these row planes are the kernels of every other CPU (and are tested here).
Repack (once, parallel over rows). The fp16 scales stay fp16 (u16 arrays, widened in the loop by vcvtph2ps at no
measured cost), so the 4- and 8-bit types take exactly the file's bytes:
  Q8_0   I8 codes + fp16 d per 32                                       [1.00x]
  Q4_0   NIB (the file's nibble order) + fp16 d; the -8 folded out as -8 d sum(x of the block)   [1.00x]
  Q4_1   NIB + fp16 d, m                                                [1.00x]
  IQ4_NL NIB + fp16 d; the codebook as a rounded quartic                [1.00x]
  Q5_0   I8 codes (q - 16) + fp16 d                                     [1.55x]
  Q5_1   I8 codes (0..31) + fp16 d, m                                   [1.50x]
Q5 as NIB + a plane of 5th bits (1.1x) ran at a third of the I8 speed in the float kernels: every bit costs an
extraction in the loop (blocks16.py's integer kernel moves them with one masked byte move per 64 codes).
"""
import numpy as np
from numba import njit, prange

from kvant.formats.blocks import block, has_field

from . import blocks16
from ._common import (F32, affine_i8, affine_nib, copy_into, dot, float_matmul, i8_dot32, nib_dot, prep_nib,
                      prep_pairs, u16_at)
from ._ir import ubits, widen
from ._isa import FAST
from .registry import Layout, register


# ---------------------------------------------------------------- repack

@njit(cache=True, parallel=True)
def _repack_plain(raw, bsize, q, qoff, d, m):
    """Blocks of bsize bytes: fp16 d at 0, fp16 m at 2 (if m has columns), len(q row)/nblocks code bytes at qoff."""
    nb = d.shape[1]
    qlen = q.shape[1] // nb
    has_m = m.shape[1] > 0
    for r in prange(raw.shape[0]):
        src = raw[r]
        qr = q[r]
        dr = d[r]
        for b in range(nb):
            o = b * bsize
            dr[b] = u16_at(src, o)
            if has_m:
                m[r, b] = u16_at(src, o + 2)
            copy_into(qr[qlen * b:qlen * (b + 1)], src[o + qoff:o + qoff + qlen])


@njit(cache=True, parallel=True)
def _repack_q5(raw, bsize, q, d, m, bias):
    """Q5_0 (bias -16) / Q5_1 (bias 0, fp16 m at 2): 5-bit codes + bias as int8, qh at qoff - 4."""
    nb = d.shape[1]
    qoff = bsize - 16
    has_m = m.shape[1] > 0
    for r in prange(raw.shape[0]):
        src = raw[r]
        qr = q[r]
        for b in range(nb):
            o = b * bsize
            d[r, b] = u16_at(src, o)
            if has_m:
                m[r, b] = u16_at(src, o + 2)
            qh = (np.uint32(src[o + qoff - 4]) | (np.uint32(src[o + qoff - 3]) << 8)
                  | (np.uint32(src[o + qoff - 2]) << 16) | (np.uint32(src[o + qoff - 1]) << 24))
            for j in range(16):
                v = src[o + qoff + j]
                lo = (v & 15) | (((qh >> j) & 1) << 4)
                hi = (v >> 4) | (((qh >> (j + 16)) & 1) << 4)
                qr[32 * b + j] = lo + bias
                qr[32 * b + 16 + j] = hi + bias


def _rp_plain(name):
    b = block(name)     # d at 0, m at 2 (Q4_1), as _repack_plain reads them
    bsize, qoff, codes, has_m = b.size, b.qs, b.size - b.qs, has_field(name, "m")

    def repack(raw, cols):
        rows, nb = raw.shape[0], cols // 32
        q = np.empty((rows, codes * nb), np.int8 if codes == 32 else np.uint8)
        d = np.empty((rows, nb), np.uint16)
        m = np.empty((rows, nb if has_m else 0), np.uint16)
        _repack_plain(raw, bsize, q.view(np.uint8), qoff, d, m)
        return (q, d, m) if has_m else (q, d)
    return repack


def _rp_q5(name):
    bsize, has_m = block(name).size, has_field(name, "m")   # qh right before the 16 code bytes at the end

    def repack(raw, cols):
        rows, nb = raw.shape[0], cols // 32
        q = np.empty((rows, cols), np.int8)
        d = np.empty((rows, nb), np.uint16)
        m = np.empty((rows, nb if has_m else 0), np.uint16)
        _repack_q5(raw, bsize, q, d, m, 0 if has_m else -16)
        return (q, d, m) if has_m else (q, d)
    return repack


# ---------------------------------------------------------------- activation scratch

def _nib_scratch(cols):
    return np.empty(cols // 2, np.float32), np.empty(cols // 2, np.float32), np.empty(cols // 32, np.float32)


def _sums_scratch(cols):
    return (np.empty(cols // 32, np.float32),)


def _pairs_scratch(cols):
    return np.empty(cols // 2, np.float32), np.empty(cols // 2, np.float32)


@njit(cache=True, fastmath=FAST)
def sums32(xs, x):
    for b in range(xs.shape[0]):
        s = F32(0.0)
        for j in range(32):
            s += x[32 * b + j]
        xs[b] = s


# ---------------------------------------------------------------- matvec

@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_i8(out, x, q, d):
    """Q8_0 and Q5_0."""
    for r in prange(out.shape[0]):
        out[r] = i8_dot32(q[r], d[r], x)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q5_1(out, x, q, d, m, xs):
    sums32(xs, x)
    for r in prange(out.shape[0]):
        out[r] = i8_dot32(q[r], d[r], x) + dot(m[r], xs)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q4_0(out, x, q, d, xa, xb, xs):
    prep_nib(xa, xb, xs, x)
    for r in prange(out.shape[0]):
        out[r] = nib_dot(q[r], d[r], xa, xb) - F32(8.0) * dot(d[r], xs)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q4_1(out, x, q, d, m, xa, xb, xs):
    prep_nib(xa, xb, xs, x)
    for r in prange(out.shape[0]):
        out[r] = nib_dot(q[r], d[r], xa, xb) + dot(m[r], xs)


# The IQ4 codebook as arithmetic: rint of this quartic (minimax fit, error 0.433 < 0.5) is kvalues[n] exactly for
# n = 0..15. A table lookup in the flat loop compiles to a gather (about 1 G elem/s); the polynomial vectorizes.
_P4, _P3, _P2, _P1, _P0 = (F32(1.58604282e-03), F32(3.10864393e-02), F32(-1.37192704e+00), F32(2.41738303e+01),
                           F32(-1.26567010e+02))


@njit(cache=True, fastmath=FAST, inline="always")
def iq4_value(n):
    return np.rint((((_P4 * n + _P3) * n + _P2) * n + _P1) * n + _P0)


@njit(cache=True, fastmath=FAST)
def iq4_dot(q, d, xlo, xhi):
    s = F32(0.0)
    for i in range(q.shape[0]):
        bf = F32(q[i])
        hf = np.floor(bf * F32(0.0625))
        lf = bf - F32(16.0) * hf
        s += widen(d[i >> 4]) * (iq4_value(lf) * xlo[i] + iq4_value(hf) * xhi[i])
    return s


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_iq4(out, x, q, d, xlo, xhi):
    """IQ4_NL and IQ4_XS."""
    prep_pairs(xlo, xhi, x)
    for r in prange(out.shape[0]):
        out[r] = iq4_dot(q[r], d[r], xlo, xhi)


# ---------------------------------------------------------------- row decoders (natural order)

@njit(cache=True, fastmath=FAST)
def _dec_i8(dst, r, q, d):
    qr = q[r]
    dr = d[r]
    for b in range(dr.shape[0]):
        affine_i8(dst[32 * b:32 * b + 32], qr[32 * b:32 * b + 32], widen(dr[b]), F32(0.0))


@njit(cache=True, fastmath=FAST)
def _dec_q5_1(dst, r, q, d, m):
    qr = q[r]
    dr = d[r]
    mr = m[r]
    for b in range(dr.shape[0]):
        affine_i8(dst[32 * b:32 * b + 32], qr[32 * b:32 * b + 32], widen(dr[b]), widen(mr[b]))


@njit(cache=True, fastmath=FAST)
def dec_nib(dst, qr, dr, mr, off):
    """dst = d * (code + off) + m per 32-element block of a NIB row (mr may be empty)."""
    for b in range(dr.shape[0]):
        db = widen(dr[b])
        mb = widen(mr[b]) if mr.shape[0] else F32(0.0)
        affine_nib(dst[32 * b:32 * b + 32], qr[16 * b:16 * b + 16], db, db * off + mb)


@njit(cache=True, fastmath=FAST)
def _iq4_block(ds, qs, s):
    for j in range(16):
        v = qs[j]
        ds[j] = s * iq4_value(ubits(v, 0, 15))
        ds[16 + j] = s * iq4_value(ubits(v, 4, 15))


@njit(cache=True, fastmath=FAST)
def dec_iq4(dst, qr, dr):
    for b in range(dr.shape[0]):
        _iq4_block(dst[32 * b:32 * b + 32], qr[16 * b:16 * b + 16], widen(dr[b]))


@njit(cache=True, fastmath=FAST)
def _dec_q4_0(dst, r, q, d):
    dec_nib(dst, q[r], d[r], d[r, :0], F32(-8.0))


@njit(cache=True, fastmath=FAST)
def _dec_q4_1(dst, r, q, d, m):
    dec_nib(dst, q[r], d[r], m[r], F32(0.0))


@njit(cache=True, fastmath=FAST)
def _dec_iq4(dst, r, q, d):
    dec_iq4(dst, q[r], d[r])


# ---------------------------------------------------------------- prefill (_common.float_matmul with each decoder)

@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_i8(out, x, q, d):
    float_matmul(out, x, _dec_i8, (q, d))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_q5_1(out, x, q, d, m):
    float_matmul(out, x, _dec_q5_1, (q, d, m))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_q4_0(out, x, q, d):
    float_matmul(out, x, _dec_q4_0, (q, d))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_q4_1(out, x, q, d, m):
    float_matmul(out, x, _dec_q4_1, (q, d, m))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_iq4(out, x, q, d):
    """IQ4_NL and IQ4_XS."""
    float_matmul(out, x, _dec_iq4, (q, d))


# ---------------------------------------------------------------- registration

def _no_scratch(cols):
    return ()


# The float kernels on the file's row planes; where the CPU has an integer path (_isa.py), 16 rows interleaved with
# integer dot products (blocks16.py) for decode and prefill
_ROW_TYPES = {
    "Q8_0": (_rp_plain("Q8_0"), _mv_i8, _no_scratch, _mm_i8, "I8 + fp16 d per 32"),
    "Q4_0": (_rp_plain("Q4_0"), _mv_q4_0, _nib_scratch, _mm_q4_0, "NIB + fp16 d per 32"),
    "Q4_1": (_rp_plain("Q4_1"), _mv_q4_1, _nib_scratch, _mm_q4_1, "NIB + fp16 d, m per 32"),
    "Q5_0": (_rp_q5("Q5_0"), _mv_i8, _no_scratch, _mm_i8, "I8 (q-16) + fp16 d per 32"),
    "Q5_1": (_rp_q5("Q5_1"), _mv_q5_1, _sums_scratch, _mm_q5_1, "I8 + fp16 d, m per 32"),
    "IQ4_NL": (_rp_plain("IQ4_NL"), _mv_iq4, _pairs_scratch, _mm_iq4,
               "NIB + fp16 d per 32, codebook as a rounded quartic"),
}
_INT_LAYOUTS = blocks16.layouts()
for _name, (_repack, _matvec, _scratch, _matmul, _note) in _ROW_TYPES.items():
    register(_name, Layout(32, _repack, _scratch, _matvec, _matmul, _note), _INT_LAYOUTS[_name])
