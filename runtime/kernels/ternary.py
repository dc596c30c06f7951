"""Ternary types TQ1_0 and TQ2_0: both repacked to one CRUMB plane of codes 0..2 (value code - 1; a TQ2_0 file may hold
code 3, +2 as in llama.cpp) and the file's fp16 d per 256 (as u16 bits: an f32 copy made TQ2_0 3% larger, and
decoding is bound by reading it), so one kernel serves both. Extra memory over the file: TQ2_0 1.0x, TQ1_0 1.22x (it
stores 5 trits a byte; decoding base 3 in the hot loop would cost more than the 0.44 bits a weight it saves)."""
import numpy as np
from numba import njit, prange

from kvant.formats.blocks import block

from ._common import F32, crumb_dot, dot, float_matmul, group_sums, prep_crumbs
from ._gemm import gemm_crumb
from ._ir import load_u16, ubits, widen
from ._isa import FAST
from ._vnni import CRUMB_WIDTH, crumb_row_dot
from .actquant import q8_k, q8_k_codes
from .intdot import code_sums, int_note
from .kquants import crumbs256
from .registry import Layout, register

TQ1, TQ2 = block("TQ1_0"), block("TQ2_0")     # TQ2_0's qs at 0: crumbs256 reads them at the block's start
_POW3 = np.array([1, 3, 9, 27, 81], np.int64)


@njit(cache=True, inline="always")
def _trit(byte, n):
    """Trit n of a TQ1_0 byte: the byte is a base-3 fraction of 256, 5 (or 4) trits most significant first."""
    return (((byte * _POW3[n]) & 255) * 3) >> 8


@njit(cache=True, inline="always")
def _tq1_code(src, o, e):
    if e < 160:
        return _trit(np.int64(src[o + TQ1.qs + (e & 31)]), e >> 5)
    if e < 240:
        f = e - 160
        return _trit(np.int64(src[o + TQ1.qs + 32 + (f & 15)]), f >> 4)
    f = e - 240
    return _trit(np.int64(src[o + TQ1.qh + (f & 3)]), f >> 2)


@njit(cache=True, inline="always")
def _tq1_crumbs(dst, src, o):
    """The 256 trits of a TQ1_0 block at src[o] as CRUMB bytes in dst[0:64]."""
    for k in range(64):
        v = 0
        for u in range(4):
            v |= _tq1_code(src, o, 4 * k + u) << (2 * u)
        dst[k] = v


@njit(inline="always")
def _repack_blocks(raw, c, d, blk_bytes, crumbs):
    """Blocks with fields as blk_bytes names them (formats/blocks): d's bits, the 256 codes into CRUMB bytes by
    crumbs(dst, src, o). Inlined into each type's kernel (a constant block size there: as a variable the TQ2_0
    repack ran 1.3x slower)."""
    for r in prange(raw.shape[0]):
        src = raw[r]
        for blk in range(d.shape[1]):
            o = blk * blk_bytes.size
            d[r, blk] = load_u16(src, o + blk_bytes.d)
            crumbs(c[r, 64 * blk:64 * (blk + 1)], src, o)


@njit(cache=True, parallel=True)
def _repack_tq2_0(raw, c, d):
    _repack_blocks(raw, c, d, TQ2, crumbs256)


@njit(cache=True, parallel=True)
def _repack_tq1_0(raw, c, d):
    _repack_blocks(raw, c, d, TQ1, _tq1_crumbs)


def _rp_tq(repack_blocks):
    def repack(raw, cols):
        rows = raw.shape[0]
        c, d = np.empty((rows, cols // 4), np.uint8), np.empty((rows, cols // 256), np.uint16)
        repack_blocks(raw, c, d)
        return c, d
    return repack


def _scratch(cols):
    return np.empty((4, cols // 4), np.float32), np.empty(cols // 256, np.float32)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_tq(out, x, c, d, y, xs):
    prep_crumbs(y, x)
    group_sums(xs, x)
    for r in prange(out.shape[0]):
        out[r] = crumb_dot(c[r], d[r], y) - dot(d[r], xs)


@njit(cache=True)
def _crumb_x_order(dst, xq):
    """xq as crumb_row_dot reads it: per 4 W elements (W = CRUMB_WIDTH, the bytes of one load of a row's CRUMB
    plane), those at 4k + u ordered by u, then k: the load's 4 fields."""
    w = CRUMB_WIDTH
    for h in range(xq.shape[0] // (4 * w)):
        for u in range(4):
            for k in range(w):
                dst[4 * w * h + w * u + k] = xq[4 * w * h + 4 * k + u]


def _int_scratch(cols):
    """Q8_K codes in _crumb_x_order, their scale per 32, -(their sum) per 256 (the code offset's term), the codes."""
    return (np.empty(cols, np.int8), np.empty(cols // 32, np.float32), np.empty(cols // 256, np.int32),
            np.empty(cols, np.int8))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_tq_vnni(out, x, c, d, xq, xd, bias, xn):
    """Integer dot products (intdot): x as Q8_K codes, value = code - 1 as the codes' dot product - their sum."""
    q8_k_codes(xn, xd, x)
    _crumb_x_order(xq, xn)
    code_sums(bias, xn, -1)
    for r in prange(out.shape[0]):
        out[r] = crumb_row_dot(c[r], d[r], xq, xd, bias, bias.shape[0])


@njit(cache=True, fastmath=FAST)
def _dec_tq(dst, r, c, d):
    for k in range(c.shape[1]):
        s = widen(d[r, k >> 6])
        b = c[r, k]
        for u in range(4):
            dst[4 * k + u] = s * (ubits(b, 2 * u, 3) - F32(1.0))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_tq(out, x, c, d):
    float_matmul(out, x, _dec_tq, (c, d))


def _gemm_tq(out, codes, c, d):
    """Integer prefill GEMM (_gemm.py): codes 0..2, value code - 1."""
    gemm_crumb(out, *codes, c, d, 1)


for _name, _repack, _codes in (("TQ2_0", _repack_tq2_0, "CRUMB codes"),
                               ("TQ1_0", _repack_tq1_0, "CRUMB codes (from base 3)")):
    _note, _rp = _codes + " + fp16 d per 256", _rp_tq(_repack)      # one repack for both paths' kernels
    register(_name, Layout(256, _rp, _scratch, _mv_tq, _mm_tq, _note),
             Layout(256, _rp, _int_scratch, _mv_tq_vnni, _mm_tq, _note + int_note(q8_k), q8_k,
                    _gemm_tq))
