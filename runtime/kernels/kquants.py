"""256-element super-block types: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS.

Repacked (once, parallel over rows), memory over the file in brackets:
  Q4_K   integer:   ROWS16, 16 rows interleaved (kquants_rows16.py)                [1.00x]
         else: the file's qs + 6-bit scale and min as u8 per 32 + fp16 d, dmin per 256  [1.03x]
  Q5_K   the same + the file's qh (5th bits)                                     [1.02x]
  Q6_K   integer:   ROWS16, 16 rows interleaved (kquants_q6k16.py)                [1.01x]
         else: the file's ql, qh, int8 scale per 16 and fp16 d, each gathered per row  [1.00x]
  IQ4_XS integer:   NIB16, 16 rows interleaved + int8 ls-32 per 32 + fp16 d (blocks16.py)  [1.01x]
         else: NIB + f32 scale per 32 (d*(ls-32)); codebook as a rounded quartic  [1.18x]
  Q2_K   the file's qs + its scale/min byte per 16 + fp16 d, dmin per 256            [1.00x]
  Q3_K   the file's qs and hmask + int8 scale (s-32) per 16 + fp16 d per 256        [1.04x]
The file's Q4_K / Q5_K qs are 32 bytes per 64 elements, block 2c in the low nibbles and block 2c+1 in the high ones,
each in element order: the integer kernel splits 64 bytes by a mask and a shift into blocks 2c, 2c+2 (low nibbles)
and 2c+1, 2c+3 (high), with x reordered to match once per call. Q6_K's ql (low nibbles: elements 0-63 of a
128-half, high nibbles: 64-127) and qh (crumb u: elements 32u .. 32u+31) give its codes 0..63 in element order the
same way (the float planes), as do Q2_K's / Q3_K's qs (crumb u of byte j:
element 32u + j of a 128-half) with Q3_K's hmask (bit 4h + u of byte j: the same element's high bit). Q4_K / Q5_K
scales and mins are kept in split order (each row's even 32-blocks', then its odd ones') so the float fallback
indexes both nibbles' scales by a shift.

Matvec of Q2_K .. Q6_K where the CPU has an integer path: llama.cpp's ggml_vec_dot_q{2..6}_K_q8_K, x quantized to
Q8_K once per call, each super-block's sum of scale * group dot product exact in int32 (vpdpbusd, vpmulld),
converted once and scaled by d_w * d_x; the mins (Q2_K, Q4_K, Q5_K: dmin * m * exact group code sums) and the
offsets of Q6_K (-32) and Q3_K (-4) (offset * sum of scale * exact per-16 code sums, inside the same int32 sum) as
llama.cpp (_vnni.q{2,3,5}k_row_dot; Q4_K and Q6_K 16 rows at a time, _vnni16.q{4,6}k_rows16_dot).
Float fallbacks (other CPUs) on the same planes: Q4_K multiplies d by the block's scale in the loop; the others
spread each row's scales into per-worker planes first (crumbs and high bits through crumb_dot16 / bits_dot16, whose
scale index k >> 4 is then a broadcast).
"""
import numpy as np
from numba import njit, prange

from kvant.formats.blocks import block

from . import kquants_q6k16 as q6k16, kquants_rows16 as rows16, blocks16
from ._common import (F32, bits_dot16, copy_into, crumb_dot16, f16_at, float_matmul, group_sums, scale_min_k4,
                      u16_at)
from ._ir import f16_to_f32, ubits, widen
from ._gemm import ROWS, gemm_q5_k, half_offsets, half_sums, spread_codes, tiles
from ._isa import FAST
from ._vnni import q2k_row_dot, q3k_row_dot, q5k_row_dot
from .legacy import _mm_iq4, _mv_iq4, _pairs_scratch
from .actquant import q8_k, q8_k_codes
from .intdot import code_sums, int_note, k4_scratch, k4_x_order, k16_scratch
from .registry import Layout, register

N_SCRATCH = 16   # per-row scale scratch rows: matvec work is split in this many chunks
Q2K, Q3K, Q4K, Q5K, Q6K, IQ4XS = (block(name) for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"))


# ---------------------------------------------------------------- repack

@njit(cache=True, inline="always")
def _k4_scales(src, o, r, blk, sc, mn, d, dm):
    """The fp16 d, dmin of the Q4_K / Q5_K block at src[o] and its 6-bit scales and mins as bytes in split order:
    the row's even 32-blocks', then its odd ones' (block 2c at c, block 2c+1 at half + c), so that a loop over the
    qs bytes (byte i: a nibble of block 2(i >> 5) and one of 2(i >> 5) + 1) indexes both by i >> 5."""
    half = sc.shape[1] // 2
    d[r, blk] = u16_at(src, o + Q4K.d)
    dm[r, blk] = u16_at(src, o + Q4K.dmin)
    for j in range(8):
        s, n = scale_min_k4(src, o + Q4K.scales, j)
        k = (j & 1) * half + 4 * blk + (j >> 1)
        sc[r, k] = s
        mn[r, k] = n


@njit(cache=True, parallel=True)
def _repack_q4_k(raw, q, sc, mn, d, dm):
    """The file's qs bytes as they are (32 per 64 elements: low nibbles block 2c, high nibbles block 2c+1, both in
    element order); scales and mins as bytes (split order), d and dmin as fp16 bits."""
    nsb = d.shape[1]
    for r in prange(raw.shape[0]):
        src = raw[r]
        for blk in range(nsb):
            o = blk * Q4K.size
            _k4_scales(src, o, r, blk, sc, mn, d, dm)
            copy_into(q[r, 128 * blk:128 * blk + 128], src[o + Q4K.qs:o + Q4K.size])


@njit(cache=True, parallel=True)
def _repack_q5_k(raw, q, qh, sc, mn, d, dm):
    """Q4_K's planes plus the file's qh (bit 2c + s of qh[m]: the 5th bit of element 64c + 32s + m)."""
    nsb = d.shape[1]
    for r in prange(raw.shape[0]):
        src = raw[r]
        for blk in range(nsb):
            o = blk * Q5K.size
            _k4_scales(src, o, r, blk, sc, mn, d, dm)     # Q5_K's d, dmin and scales are where Q4_K's are
            copy_into(qh[r, 32 * blk:32 * blk + 32], src[o + Q5K.qh:o + Q5K.qs])
            copy_into(q[r, 128 * blk:128 * blk + 128], src[o + Q5K.qs:o + Q5K.size])


@njit(cache=True, parallel=True)
def _repack_iq4_xs(raw, q, d):
    nsb = d.shape[1] // 8
    for r in prange(raw.shape[0]):
        src = raw[r]
        for blk in range(nsb):
            o = blk * IQ4XS.size
            dd = f16_at(src, o + IQ4XS.d)
            sh = np.int64(u16_at(src, o + IQ4XS.scales_h))
            for ib in range(8):
                ls = ((src[o + IQ4XS.scales_l + ib // 2] >> (4 * (ib % 2))) & 15) | (((sh >> (2 * ib)) & 3) << 4)
                d[r, 8 * blk + ib] = dd * F32(ls - 32)
            for j in range(128):
                q[r, 128 * blk + j] = src[o + IQ4XS.qs + j]


@njit(cache=True, parallel=True)
def _repack_q6_k(raw, ql, qh, sc, d):
    """The file's planes, each row's super-blocks' ql, qh, scales and fp16 d gathered into one array each."""
    nsb = d.shape[1]
    for r in prange(raw.shape[0]):
        src = raw[r]
        for blk in range(nsb):
            o = blk * Q6K.size
            d[r, blk] = u16_at(src, o + Q6K.d)
            copy_into(ql[r, 128 * blk:128 * blk + 128], src[o + Q6K.ql:o + Q6K.qh])
            copy_into(qh[r, 64 * blk:64 * blk + 64], src[o + Q6K.qh:o + Q6K.scales])
            copy_into(sc[r, 16 * blk:16 * blk + 16], src[o + Q6K.scales:o + Q6K.d])


@njit(cache=True, inline="always")
def crumbs256(dst, src, o):
    """Repack the 64 two-bit bytes of a 256-block at src[o] (Q2_K / Q3_K / TQ2_0 order: element 128h + 32s + m is
    bits 2s of byte 32h + m) into CRUMB order (byte k holds elements 4k .. 4k+3) in dst[0:64]."""
    for h in range(2):
        for s in range(4):
            for k in range(8):
                v = 0
                for u in range(4):
                    v |= ((src[o + 32 * h + 4 * k + u] >> (2 * s)) & 3) << (2 * u)
                dst[32 * h + 8 * s + k] = v


@njit(cache=True, parallel=True)
def _repack_q2_k(raw, c, sc, d, dm):
    """The file's planes gathered per row: scale bytes, qs (crumb u of byte 32h + j: element 128h + 32u + j),
    fp16 d and dmin."""
    nsb = d.shape[1]
    for r in prange(raw.shape[0]):
        src = raw[r]
        for blk in range(nsb):
            o = blk * Q2K.size
            d[r, blk] = u16_at(src, o + Q2K.d)
            dm[r, blk] = u16_at(src, o + Q2K.dmin)
            copy_into(sc[r, 16 * blk:16 * blk + 16], src[o + Q2K.scales:o + Q2K.qs])
            copy_into(c[r, 64 * blk:64 * blk + 64], src[o + Q2K.qs:o + Q2K.d])


@njit(cache=True, parallel=True)
def _repack_q3_k(raw, c, h, sc, d):
    """The file's qs (as Q2_K's) and hmask (bit u of byte j: element 32u + j) gathered per row, the 6-bit scales
    minus 32 as int8, d as fp16."""
    nsb = d.shape[1]
    for r in prange(raw.shape[0]):
        src = raw[r]
        for blk in range(nsb):
            o = blk * Q3K.size
            d[r, blk] = u16_at(src, o + Q3K.d)
            for g in range(16):
                lo = (src[o + Q3K.scales + (g & 7)] >> (4 * (g >> 3))) & 15
                hi = (src[o + Q3K.scales + 8 + (g & 3)] >> (2 * (g >> 2))) & 3
                sc[r, 16 * blk + g] = (lo | (hi << 4)) - 32
            copy_into(c[r, 64 * blk:64 * blk + 64], src[o + Q3K.qs:o + Q3K.scales])
            copy_into(h[r, 32 * blk:32 * blk + 32], src[o + Q3K.hmask:o + Q3K.qs])


def _rp_q4_k(raw, cols):
    rows = raw.shape[0]
    q = np.empty((rows, cols // 2), np.uint8)
    sc = np.empty((rows, cols // 32), np.uint8)
    mn = np.empty((rows, cols // 32), np.uint8)
    d = np.empty((rows, cols // 256), np.uint16)
    dm = np.empty((rows, cols // 256), np.uint16)
    _repack_q4_k(raw, q, sc, mn, d, dm)
    return q, sc, mn, d, dm


def _rp_q5_k(raw, cols):
    rows = raw.shape[0]
    q = np.empty((rows, cols // 2), np.uint8)
    qh = np.empty((rows, cols // 8), np.uint8)
    sc = np.empty((rows, cols // 32), np.uint8)
    mn = np.empty((rows, cols // 32), np.uint8)
    d = np.empty((rows, cols // 256), np.uint16)
    dm = np.empty((rows, cols // 256), np.uint16)
    _repack_q5_k(raw, q, qh, sc, mn, d, dm)
    return q, qh, sc, mn, d, dm


def _rp_iq4_xs(raw, cols):
    rows = raw.shape[0]
    q = np.empty((rows, cols // 2), np.uint8)
    d = np.empty((rows, cols // 32), np.float32)
    _repack_iq4_xs(raw, q, d)
    return q, d


def _rp_q6_k(raw, cols):
    rows = raw.shape[0]
    ql = np.empty((rows, cols // 2), np.uint8)
    qh = np.empty((rows, cols // 4), np.uint8)
    sc = np.empty((rows, cols // 16), np.int8)
    d = np.empty((rows, cols // 256), np.uint16)
    _repack_q6_k(raw, ql, qh, sc.view(np.uint8), d)
    return ql, qh, sc, d


def _rp_q2_k(raw, cols):
    rows = raw.shape[0]
    c = np.empty((rows, cols // 4), np.uint8)
    sc = np.empty((rows, cols // 16), np.uint8)
    d = np.empty((rows, cols // 256), np.uint16)
    dm = np.empty((rows, cols // 256), np.uint16)
    _repack_q2_k(raw, c, sc, d, dm)
    return c, sc, d, dm


def _rp_q3_k(raw, cols):
    rows = raw.shape[0]
    c = np.empty((rows, cols // 4), np.uint8)
    h = np.empty((rows, cols // 8), np.uint8)
    sc = np.empty((rows, cols // 16), np.int8)
    d = np.empty((rows, cols // 256), np.uint16)
    _repack_q3_k(raw, c, h, sc.view(np.uint8), d)
    return c, h, sc, d


# ---------------------------------------------------------------- activation scratch

def _q4_k_scratch(cols):
    return np.empty(cols // 2, np.float32), np.empty(cols // 2, np.float32), np.empty(cols // 32, np.float32)


def _q6_k_scratch(cols):
    return (np.empty(cols // 2, np.float32), np.empty(cols // 2, np.float32), np.empty((4, cols // 4), np.float32),
            np.empty(cols // 16, np.float32), np.empty((N_SCRATCH, 3, cols // 32), np.float32),
            np.empty((N_SCRATCH, 4, cols // 64), np.float32))


def _q5_k_scratch(cols):
    return _q4_k_scratch(cols) + (np.empty((8, cols // 8), np.float32),
                                  np.empty((N_SCRATCH, 8, cols // 128), np.float32))


def _q2_k_scratch(cols):
    return (np.empty((4, cols // 4), np.float32), np.empty(cols // 16, np.float32),
            np.empty((N_SCRATCH, 4, cols // 64), np.float32))


def _q3_k_scratch(cols):
    return (np.empty((4, cols // 4), np.float32), np.empty((8, cols // 8), np.float32),
            np.empty(cols // 16, np.float32), np.empty((N_SCRATCH, 4, cols // 64), np.float32),
            np.empty((N_SCRATCH, 8, cols // 128), np.float32))


# ---------------------------------------------------------------- matvec
# The integer kernels (_mv_*_vnni) repeat one short loop on purpose: each row intrinsic takes its own planes' rows,
# and a shared loop would have to slice a mixed tuple of planes per row (numba: only through literal_unroll).

@njit(cache=True, fastmath=FAST)
def prep_k4(xa, xb, xs, x):
    """Activation planes of the Q4_K qs order: byte i of a 64-element chunk c holds element 64c + i (low nibble)
    and 64c + 32 + i (high): xa, xb those elements' x; xs the per-32 sums of x in split order."""
    half = xs.shape[0] // 2
    for c in range(half):
        sa = F32(0.0)
        sb = F32(0.0)
        for j in range(32):
            lo = x[64 * c + j]
            hi = x[64 * c + 32 + j]
            xa[32 * c + j] = lo
            xb[32 * c + j] = hi
            sa += lo
            sb += hi
        xs[c] = sa
        xs[half + c] = sb


@njit(cache=True, fastmath=FAST)
def k4_dot(q, sc, mn, d, dm, xa, xb, xs):
    """A Q4_K row (the file's qs, u8 scales and mins per 32 in split order, fp16 d, dmin per 256) with prep_k4
    planes. The two nibbles of a byte have different scales a, b: lo*a*xa + hi*b*xb = byte*a*xa + hi*(b*xb - 16*a*xa),
    a = d[i >> 7] * sc[i >> 5] and b = d[i >> 7] * sc[half + (i >> 5)] formed in the loop (shifts: broadcasts)."""
    half = xs.shape[0] // 2
    sca = sc[:half]
    scb = sc[half:]
    s = F32(0.0)
    for i in range(q.shape[0]):
        bf = F32(q[i])
        dd = widen(d[i >> 7])
        a = dd * F32(sca[i >> 5]) * xa[i]
        s += bf * a + np.floor(bf * F32(0.0625)) * (dd * F32(scb[i >> 5]) * xb[i] - F32(16.0) * a)
    mna = mn[:half]
    mnb = mn[half:]
    m = F32(0.0)
    for c in range(half):
        m += widen(dm[c >> 2]) * (F32(mna[c]) * xs[c] + F32(mnb[c]) * xs[half + c])
    return s - m


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q4_k(out, x, q, sc, mn, d, dm, xa, xb, xs):
    prep_k4(xa, xb, xs, x)
    for r in prange(out.shape[0]):
        out[r] = k4_dot(q[r], sc[r], mn[r], d[r], dm[r], xa, xb, xs)


@njit(cache=True, fastmath=FAST)
def prep_q5(y, x):
    """BITS16 planes of Q5_K's qh: bit t of qh byte k (32 bytes per super-block) is element 256 (k >> 5) + 32t +
    (k & 31): y[t, k] = that x."""
    for k in range(y.shape[1]):
        for t in range(8):
            y[t, k] = x[256 * (k >> 5) + 32 * t + (k & 31)]


@njit(cache=True, fastmath=FAST)
def q5_dot(q, qh, sc, mn, d, dm, xa, xb, xs, y, s8):
    """A Q5_K row: k4_dot of the low 4 bits plus 16 * scale * bit * x of the 5th bits (bits_dot16 with the scale
    of bit t of the bytes 16u .. 16u + 15 at s8[t, u], filled here for the row)."""
    half = sc.shape[0] // 2
    for u in range(s8.shape[1]):
        b = u >> 1
        dd = F32(16.0) * widen(d[b])
        for t in range(4):
            s8[2 * t, u] = dd * F32(sc[4 * b + t])
            s8[2 * t + 1, u] = dd * F32(sc[half + 4 * b + t])
    return k4_dot(q, sc, mn, d, dm, xa, xb, xs) + bits_dot16(qh, s8, y)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q5_k(out, x, q, qh, sc, mn, d, dm, xa, xb, xs, y, s8):
    prep_k4(xa, xb, xs, x)
    prep_q5(y, x)
    rows = out.shape[0]
    for ch in prange(N_SCRATCH):
        for r in range(rows * ch // N_SCRATCH, rows * (ch + 1) // N_SCRATCH):
            out[r] = q5_dot(q[r], qh[r], sc[r], mn[r], d[r], dm[r], xa, xb, xs, y, s8[ch])


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q5_k_vnni(out, x, q, qh, sc, mn, d, dm, xq, xd, bs, xn):
    """Integer dot products as llama.cpp's (_vnni.q5k_row_dot)."""
    q8_k_codes(xn, xd, x)
    code_sums(bs, xn)
    k4_x_order(xq, xn)
    nsb = d.shape[1]
    for r in prange(out.shape[0]):
        out[r] = q5k_row_dot(q[r], qh[r], sc[r], mn[r], d[r], dm[r], xq, xd, bs, nsb)


@njit(cache=True, fastmath=FAST)
def prep_q6(xa, xb, y, xs, x):
    """Activation planes of the Q6_K file order, for half super-block R (128 elements): ql byte 64R + j holds
    element 128R + j (low nibble, xa) and 128R + 64 + j (high, xb); crumb u of qh byte 32R + j is bits 4-5 of
    element 128R + 32u + j (y[u] = 16 x); xs the per-16 sums of x."""
    for rr in range(x.shape[0] // 128):
        for j in range(64):
            xa[64 * rr + j] = x[128 * rr + j]
            xb[64 * rr + j] = x[128 * rr + 64 + j]
        for u in range(4):
            for j in range(32):
                y[u, 32 * rr + j] = F32(16.0) * x[128 * rr + 32 * u + j]
    group_sums(xs, x)


@njit(cache=True, fastmath=FAST)
def q6_dot(ql, qh, sc, d, xa, xb, y, xs, s2, s4):
    """A Q6_K row (the file's planes) with prep_q6 planes. The row's scales d*sc are first spread into s2 (ql bytes:
    the low and the high nibble's group of byte 16k..16k+15 at s2[0, k], s2[1, k]) and s4 (qh: crumb u of bytes
    16k..16k+15 at s4[u, k]) so every scale index in the loops is a shift (a broadcast)."""
    dr = s2[2, :d.shape[0]]
    for k in range(d.shape[0]):
        dr[k] = widen(d[k])
    bias = F32(0.0)
    for g in range(sc.shape[0]):
        bias += dr[g >> 4] * F32(sc[g]) * xs[g]
    for k in range(sc.shape[0] // 2):          # unit k = 4R + t of half super-block R: groups 8R + t, 8R + 4 + t
        g = 8 * (k >> 2) + (k & 3)
        s2[0, k] = dr[k >> 3] * F32(sc[g])
        s2[1, k] = dr[k >> 3] * F32(sc[g + 4])
    for k in range(sc.shape[0] // 4):          # unit k = 2R + j: crumb u in group 8R + 2u + j
        g = 8 * (k >> 1) + (k & 1)
        for u in range(4):
            s4[u, k] = dr[k >> 2] * F32(sc[g + 2 * u])
    s = F32(0.0)
    for i in range(ql.shape[0]):
        bf = F32(ql[i])
        a = s2[0, i >> 4] * xa[i]
        s += bf * a + np.floor(bf * F32(0.0625)) * (s2[1, i >> 4] * xb[i] - F32(16.0) * a)
    return s + crumb_dot16(qh, s4, y) - F32(32.0) * bias


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q6_k(out, x, ql, qh, sc, d, xa, xb, y, xs, s2, s4):
    prep_q6(xa, xb, y, xs, x)
    rows = out.shape[0]
    for ch in prange(N_SCRATCH):
        for r in range(rows * ch // N_SCRATCH, rows * (ch + 1) // N_SCRATCH):
            out[r] = q6_dot(ql[r], qh[r], sc[r], d[r], xa, xb, y, xs, s2[ch], s4[ch])


@njit(cache=True, fastmath=FAST)
def prep_crumbs_file(y, x):
    """Planes of the Q2_K / Q6_K-qh crumb order: crumb t of byte k (32 per 128 elements) is element
    128 (k >> 5) + 32t + (k & 31); y[t, k] = that x."""
    for k in range(y.shape[1]):
        for t in range(4):
            y[t, k] = x[128 * (k >> 5) + 32 * t + (k & 31)]


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q2_k(out, x, c, sc, d, dm, y, xs, s4):
    """Float fallback: crumb_dot16 over the file's qs, the row's scales spread into per-worker planes: crumb t of
    bytes 16u .. 16u + 15 lies in group 8 (u >> 1) + 2t + (u & 1)."""
    prep_crumbs_file(y, x)
    group_sums(xs, x)
    rows = out.shape[0]
    for ch in prange(N_SCRATCH):
        s = s4[ch]
        for r in range(rows * ch // N_SCRATCH, rows * (ch + 1) // N_SCRATCH):
            scr = sc[r]
            dr = d[r]
            dmr = dm[r]
            bias = F32(0.0)
            for g in range(xs.shape[0]):
                s[(g >> 1) & 3, 2 * (g >> 3) + (g & 1)] = widen(dr[g >> 4]) * ubits(scr[g], 0, 15)
                bias += widen(dmr[g >> 4]) * ubits(scr[g], 4, 15) * xs[g]
            out[r] = crumb_dot16(c[r], s, y) - bias


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q3_k_vnni(out, x, c, h, sc, d, xq, xd, bs):
    """Integer dot products as llama.cpp's (_vnni.q3k_row_dot)."""
    q8_k_codes(xq, xd, x)
    code_sums(bs, xq)
    nsb = d.shape[1]
    for r in prange(out.shape[0]):
        out[r] = q3k_row_dot(c[r], h[r], sc[r], d[r], xq, xd, bs, nsb)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q2_k_vnni(out, x, c, sc, d, dm, xq, xd, bs):
    """Integer dot products as llama.cpp's (_vnni.q2k_row_dot)."""
    q8_k_codes(xq, xd, x)
    code_sums(bs, xq)
    nsb = d.shape[1]
    for r in prange(out.shape[0]):
        out[r] = q2k_row_dot(c[r], sc[r], d[r], dm[r], xq, xd, bs, nsb)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_q3_k(out, x, c, h, sc, d, y, yb, xs, s4, s8):
    """Float fallback: crumb_dot16 over qs and bits_dot16 over hmask (bit t of bytes 16u .. 16u + 15: group
    16 (u >> 1) + 2t + (u & 1)), the row's scales spread into per-worker planes."""
    prep_crumbs_file(y, x)
    prep_q5(yb, x)
    group_sums(xs, x)
    rows = out.shape[0]
    for ch in prange(N_SCRATCH):
        sa = s4[ch]
        sb = s8[ch]
        for r in range(rows * ch // N_SCRATCH, rows * (ch + 1) // N_SCRATCH):
            scr = sc[r]
            dr = d[r]
            bias = F32(0.0)
            for g in range(xs.shape[0]):
                v = widen(dr[g >> 4]) * F32(scr[g])
                sa[(g >> 1) & 3, 2 * (g >> 3) + (g & 1)] = v
                sb[(g >> 1) & 7, 2 * (g >> 4) + (g & 1)] = v
                bias += v * xs[g]
            out[r] = crumb_dot16(c[r], sa, y) + F32(4.0) * (bits_dot16(h[r], sb, yb) - bias)


# ---------------------------------------------------------------- row decoders (natural order)

@njit(cache=True, fastmath=FAST)
def _k4_chunk(ds, qs, sa, ma, sb, mb):
    """64 floats of a Q4_K chunk from its 32 qs bytes: low nibbles * sa - ma, then high nibbles * sb - mb."""
    for j in range(32):
        v = qs[j]
        ds[j] = sa * ubits(v, 0, 15) - ma
        ds[32 + j] = sb * ubits(v, 4, 15) - mb


@njit(cache=True, fastmath=FAST)
def _dec_q4_k(dst, r, q, sc, mn, d, dm):
    half = sc.shape[1] // 2
    for c in range(half):
        dd = f16_to_f32(d[r, c >> 2])
        dmm = f16_to_f32(dm[r, c >> 2])
        _k4_chunk(dst[64 * c:64 * c + 64], q[r, 32 * c:32 * c + 32], dd * F32(sc[r, c]), dmm * F32(mn[r, c]),
                  dd * F32(sc[r, half + c]), dmm * F32(mn[r, half + c]))


@njit(cache=True, fastmath=FAST)
def _k5_chunk(ds, qs, qh, sh, sa, ma, sb, mb):
    """_k4_chunk with the 5th bits: bit sh of qh[j] for element j, bit sh + 1 for element 32 + j."""
    for j in range(32):
        v = qs[j]
        h = qh[j]
        ds[j] = sa * (ubits(v, 0, 15) + F32(16.0) * ubits(h, sh, 1)) - ma
        ds[32 + j] = sb * (ubits(v, 4, 15) + F32(16.0) * ubits(h, sh + 1, 1)) - mb


@njit(cache=True, fastmath=FAST)
def _dec_q5_k(dst, r, q, qh, sc, mn, d, dm):
    half = sc.shape[1] // 2
    for c in range(half):
        dd = f16_to_f32(d[r, c >> 2])
        dmm = f16_to_f32(dm[r, c >> 2])
        o = 32 * (c >> 2)
        _k5_chunk(dst[64 * c:64 * c + 64], q[r, 32 * c:32 * c + 32], qh[r, o:o + 32], 2 * (c & 3),
                  dd * F32(sc[r, c]), dmm * F32(mn[r, c]), dd * F32(sc[r, half + c]), dmm * F32(mn[r, half + c]))


@njit(cache=True, fastmath=FAST)
def _dec_q6_k(dst, r, ql, qh, sc, d):
    """Element 128R + 32u + j of a row (R a half super-block): nibble u >> 1 of ql[64R + 32(u & 1) + j], crumb u of
    qh[32R + j]. The codes first, then each 16-element group scaled (loops of constant length: vectorized)."""
    qlr = ql[r]
    qhr = qh[r]
    for rr in range(dst.shape[0] // 128):
        for j in range(32):
            a = qlr[64 * rr + j]
            b = qlr[64 * rr + 32 + j]
            c = qhr[32 * rr + j]
            dst[128 * rr + j] = ubits(a, 0, 15) + F32(16.0) * ubits(c, 0, 3)
            dst[128 * rr + 32 + j] = ubits(b, 0, 15) + F32(16.0) * ubits(c, 2, 3)
            dst[128 * rr + 64 + j] = ubits(a, 4, 15) + F32(16.0) * ubits(c, 4, 3)
            dst[128 * rr + 96 + j] = ubits(b, 4, 15) + F32(16.0) * ubits(c, 6, 3)
    for g in range(sc.shape[1]):
        s = f16_to_f32(d[r, g >> 4]) * F32(sc[r, g])
        for j in range(16 * g, 16 * g + 16):
            dst[j] = s * (dst[j] - F32(32.0))


@njit(cache=True, fastmath=FAST)
def _dec_q2_k(dst, r, c, sc, d, dm):
    """The codes first (crumb t of byte 32R + j: element 128R + 32t + j), then each 16-group scaled."""
    cr = c[r]
    for rr in range(dst.shape[0] // 128):
        for j in range(32):
            v = cr[32 * rr + j]
            dst[128 * rr + j] = ubits(v, 0, 3)
            dst[128 * rr + 32 + j] = ubits(v, 2, 3)
            dst[128 * rr + 64 + j] = ubits(v, 4, 3)
            dst[128 * rr + 96 + j] = ubits(v, 6, 3)
    for g in range(sc.shape[1]):
        v = sc[r, g]
        a = f16_to_f32(d[r, g >> 4]) * ubits(v, 0, 15)
        m = f16_to_f32(dm[r, g >> 4]) * ubits(v, 4, 15)
        for j in range(16 * g, 16 * g + 16):
            dst[j] = a * dst[j] - m


@njit(cache=True, fastmath=FAST)
def _dec_q3_k(dst, r, c, h, sc, d):
    """The codes 0..7 first (crumb t of qs byte 32R + j and bit 4 (R & 1) + t of hmask byte 32 (R >> 1) + j:
    element 128R + 32t + j), then each 16-group scaled: d * sc * (code - 4)."""
    cr = c[r]
    hr = h[r]
    for rr in range(dst.shape[0] // 128):
        hs = 4 * (rr & 1)
        ho = 32 * (rr >> 1)
        for j in range(32):
            v = cr[32 * rr + j]
            b = hr[ho + j]
            dst[128 * rr + j] = ubits(v, 0, 3) + F32(4.0) * ubits(b, hs, 1)
            dst[128 * rr + 32 + j] = ubits(v, 2, 3) + F32(4.0) * ubits(b, hs + 1, 1)
            dst[128 * rr + 64 + j] = ubits(v, 4, 3) + F32(4.0) * ubits(b, hs + 2, 1)
            dst[128 * rr + 96 + j] = ubits(v, 6, 3) + F32(4.0) * ubits(b, hs + 3, 1)
    for g in range(sc.shape[1]):
        a = f16_to_f32(d[r, g >> 4]) * F32(sc[r, g])
        for j in range(16 * g, 16 * g + 16):
            dst[j] = a * (dst[j] - F32(4.0))


# ---------------------------------------------------------------- prefill

@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_q4_k(out, x, q, sc, mn, d, dm):
    float_matmul(out, x, _dec_q4_k, (q, sc, mn, d, dm))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_q5_k(out, x, q, qh, sc, mn, d, dm):
    float_matmul(out, x, _dec_q5_k, (q, qh, sc, mn, d, dm))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_q6_k(out, x, ql, qh, sc, d):
    float_matmul(out, x, _dec_q6_k, (ql, qh, sc, d))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_q2_k(out, x, c, sc, d, dm):
    float_matmul(out, x, _dec_q2_k, (c, sc, d, dm))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_q3_k(out, x, c, h, sc, d):
    float_matmul(out, x, _dec_q3_k, (c, h, sc, d))


# ---------------------------------------------------------------- integer prefill GEMM (kernels/_gemm.py)

_CRUMBS = np.uint64(0x0303030303030303)
_BITS = np.uint64(0x0101010101010101)


@njit(cache=True)
def _q23_codes(wt, c, h, r0, nb, has_h):
    """Rows r0..r0+15 (past the end: the last again) of the qs plane of Q2_K / Q3_K (crumb u of byte 32 half + j:
    element 128 half + 32 u + j of a super-block) into _gemm.py's TILE order, plus 4 * the hmask bit (bit u of byte
    j: element 32 u + j) where has_h. Eight codes a step: eight consecutive elements are eight consecutive bytes at
    one shift in both planes, and two 4-element groups of a tile row."""
    words = wt.view(np.uint32)
    last = c.shape[0] - 1
    for j in range(ROWS):
        r = min(r0 + j, last)
        cw, hw = c[r].view(np.uint64), h[r].view(np.uint64)
        for e8 in range(4 * nb):
            sb, e = e8 >> 5, 8 * (e8 & 31)
            v = (cw[8 * sb + 4 * (e >> 7) + ((e & 31) >> 3)] >> np.uint64(2 * ((e >> 5) & 3))) & _CRUMBS
            if has_h:
                v |= ((hw[4 * sb + ((e & 31) >> 3)] >> np.uint64(e >> 5)) & _BITS) << np.uint64(2)
            o = 128 * (e8 >> 2) + 32 * (e8 & 3) + j
            words[o] = np.uint32(v & np.uint64(0xFFFFFFFF))
            words[o + 16] = np.uint32(v >> np.uint64(32))


@njit(cache=True)
def _k16_tile(wt, ws, wm, r0, c, h, sc, d, dm, has_h, has_min):
    """Q2_K's tile (codes 0..3, ws = d * scale and wm = -dmin * min per 16 elements: the low and high nibble of its
    scale byte) or Q3_K's (has_h: codes 0..7, the value + 4; ws = d * its int8 scale); k = 2 block + half."""
    nb = ws.shape[0] // (2 * ROWS)
    _q23_codes(wt, c, h, r0, nb, has_h)
    last = c.shape[0] - 1
    for j in range(ROWS):
        r = min(r0 + j, last)
        for k in range(2 * nb):
            if has_min:
                ws[ROWS * k + j] = widen(d[r, k >> 4]) * F32(sc[r, k] & 15)
                wm[ROWS * k + j] = -widen(dm[r, k >> 4]) * F32(sc[r, k] >> 4)
            else:
                ws[ROWS * k + j] = widen(d[r, k >> 4]) * F32(sc[r, k])


@njit(cache=True, parallel=True)
def _gemm_q2_k(out, xq, xd, xs, xm, c, sc, d, dm):
    """Q2_K: no offset, the mins against xd * code sum per 16 (tile_gemm_min16)."""
    xo = np.zeros((xq.shape[0], xq.shape[1] // 16), np.int32)
    tiles(out, xq, xd, xo, half_sums(xq, xd), True, False, _k16_tile, (c, c, sc, d, dm, False, True), 2)


@njit(cache=True, parallel=True)
def _gemm_q3_k(out, xq, xd, xs, xm, c, h, sc, d):
    """Q3_K: offset 4 per 16 codes (tile_gemm16)."""
    tiles(out, xq, xd, half_offsets(xq, 4), xm, False, False, _k16_tile, (c, h, sc, d, d, True, False), 2)


# ---------------------------------------------------------------- registration

# Q4_K, IQ4_XS, Q6_K: the float kernels on the file's row planes; with an integer path (_isa.py), a 16-row layout for
# decode and the integer prefill GEMM
register("Q4_K", Layout(256, _rp_q4_k, _q4_k_scratch, _mv_q4_k, _mm_q4_k,
                        "the file's qs + u8 scale, min per 32 + fp16 d, dmin per 256"), rows16.LAYOUT)
register("IQ4_XS", Layout(256, _rp_iq4_xs, _pairs_scratch, _mv_iq4, _mm_iq4, "NIB + f32 scale per 32"),
         blocks16.IQ4_XS)
register("Q6_K", Layout(256, _rp_q6_k, _q6_k_scratch, _mv_q6_k, _mm_q6_k,
                        "the file's ql, qh, int8 scale per 16 + fp16 d per 256"), q6k16.LAYOUT)

# Q5_K, Q2_K, Q3_K: the file's bytes on every path, float or integer dot products
_FILE_ROWS = {
    "Q5_K": (_rp_q5_k, _mv_q5_k, _q5_k_scratch, _mm_q5_k, _mv_q5_k_vnni, k4_scratch, gemm_q5_k,
             "the file's qs, qh + u8 scale, min per 32 + fp16 d, dmin per 256"),
    "Q2_K": (_rp_q2_k, _mv_q2_k, _q2_k_scratch, _mm_q2_k, _mv_q2_k_vnni, k16_scratch, _gemm_q2_k,
             "the file's qs, scale/min bytes per 16 + fp16 d, dmin per 256"),
    "Q3_K": (_rp_q3_k, _mv_q3_k, _q3_k_scratch, _mm_q3_k, _mv_q3_k_vnni, k16_scratch, _gemm_q3_k,
             "the file's qs, hmask + int8 scale per 16 + fp16 d per 256"),
}
for _name, (_repack, _matvec, _scratch, _matmul, _int_matvec, _int_scratch, _int_gemm, _note) in _FILE_ROWS.items():
    register(_name, Layout(256, _repack, _scratch, _matvec, _matmul, _note),
             Layout(256, _repack, _int_scratch, _int_matvec, _matmul, _note + int_note(q8_k), q8_k,
                    spread_codes(_int_gemm)))
