"""F32, F16, BF16: no repack, the kernels read the mapped rows (views, 1.0x). The matvec's row loop is LLVM IR
(_fdot.py): fp16 / bf16 widened 16 at a time (vcvtph2ps for F16 through an LLVM fpext), four 16-lane accumulators,
rows in memory order in 16 contiguous chunks."""
import numpy as np
from numba import njit, prange

from ._common import F32, ROW_TILE, gemm_tile, n_chunks, tile_span
from ._fdot import rows_dot_bf16, rows_dot_f16, rows_dot_f32
from ._ir import bf16_to_f32, f16_to_f32
from .registry import Layout, register


@njit(cache=True, inline="always")
def _row_chunk(c, nc, rows):
    """Rows [r0, r1) of chunk c of nc: contiguous, so each thread reads one run of memory in order."""
    return rows * c // nc, rows * (c + 1) // nc


MV_CHUNKS = 16      # work items per matvec (numba hands each thread a contiguous run of them)


@njit(cache=True, fastmath=True)
def _tail_f32(out, x, w, r0, r1, c0):
    """The last cols % 16 columns, which rows_dot_* leave out."""
    for r in range(r0, r1):
        s = F32(0.0)
        for i in range(c0, x.shape[0]):
            s += w[r, i] * x[i]
        out[r] += s


@njit(cache=True, fastmath=True)
def _tail_f16(out, x, w, r0, r1, c0):
    for r in range(r0, r1):
        s = F32(0.0)
        for i in range(c0, x.shape[0]):
            s += f16_to_f32(w[r, i]) * x[i]
        out[r] += s


@njit(cache=True, fastmath=True)
def _tail_bf16(out, x, w, r0, r1, c0):
    for r in range(r0, r1):
        s = F32(0.0)
        for i in range(c0, x.shape[0]):
            s += bf16_to_f32(w[r, i]) * x[i]
        out[r] += s


@njit(cache=True, fastmath=True, parallel=True)
def _mv_f32(out, x, w):
    nc = min(MV_CHUNKS, out.shape[0])
    c0 = x.shape[0] & ~15
    for c in prange(nc):
        r0, r1 = _row_chunk(c, nc, out.shape[0])
        rows_dot_f32(out, x, w, r0, r1)
        if c0 < x.shape[0]:
            _tail_f32(out, x, w, r0, r1, c0)


@njit(cache=True, fastmath=True, parallel=True)
def _mv_f16(out, x, w):
    nc = min(MV_CHUNKS, out.shape[0])
    c0 = x.shape[0] & ~15
    for c in prange(nc):
        r0, r1 = _row_chunk(c, nc, out.shape[0])
        rows_dot_f16(out, x, w, r0, r1)
        if c0 < x.shape[0]:
            _tail_f16(out, x, w, r0, r1, c0)


@njit(cache=True, fastmath=True, parallel=True)
def _mv_bf16(out, x, w):
    nc = min(MV_CHUNKS, out.shape[0])
    c0 = x.shape[0] & ~15
    for c in prange(nc):
        r0, r1 = _row_chunk(c, nc, out.shape[0])
        rows_dot_bf16(out, x, w, r0, r1)
        if c0 < x.shape[0]:
            _tail_bf16(out, x, w, r0, r1, c0)


@njit(cache=True)
def _dec_f32(dst, r, w):
    for i in range(dst.shape[0]):
        dst[i] = w[r, i]


@njit(cache=True)
def _dec_f16(dst, r, w):
    for i in range(dst.shape[0]):
        dst[i] = f16_to_f32(w[r, i])


@njit(cache=True)
def _dec_bf16(dst, r, w):
    for i in range(dst.shape[0]):
        dst[i] = bf16_to_f32(w[r, i])


@njit(cache=True, fastmath=True, parallel=True)
def _mm_f32(out, x, w):
    nt = n_chunks(out.shape[1])
    for ch in prange(nt):
        t = np.empty((ROW_TILE, x.shape[1]), np.float32)
        t0, t1 = tile_span(ch, nt, out.shape[1])
        for k in range(t0, t1):
            r0 = k * ROW_TILE
            nr = min(ROW_TILE, out.shape[1] - r0)
            for j in range(nr):
                _dec_f32(t[j], r0 + j, w)
            gemm_tile(out, x, t, r0, nr)


@njit(cache=True, fastmath=True, parallel=True)
def _mm_f16(out, x, w):
    nt = n_chunks(out.shape[1])
    for ch in prange(nt):
        t = np.empty((ROW_TILE, x.shape[1]), np.float32)
        t0, t1 = tile_span(ch, nt, out.shape[1])
        for k in range(t0, t1):
            r0 = k * ROW_TILE
            nr = min(ROW_TILE, out.shape[1] - r0)
            for j in range(nr):
                _dec_f16(t[j], r0 + j, w)
            gemm_tile(out, x, t, r0, nr)


@njit(cache=True, fastmath=True, parallel=True)
def _mm_bf16(out, x, w):
    nt = n_chunks(out.shape[1])
    for ch in prange(nt):
        t = np.empty((ROW_TILE, x.shape[1]), np.float32)
        t0, t1 = tile_span(ch, nt, out.shape[1])
        for k in range(t0, t1):
            r0 = k * ROW_TILE
            nr = min(ROW_TILE, out.shape[1] - r0)
            for j in range(nr):
                _dec_bf16(t[j], r0 + j, w)
            gemm_tile(out, x, t, r0, nr)


def _view(dtype):
    def repack(raw, cols):
        return (raw.view(dtype),)
    return repack


register("F32", Layout(1, _view(np.float32), lambda c: (), _mv_f32, _mm_f32, "file rows as f32 (view)"))
register("F16", Layout(1, _view(np.uint16), lambda c: (), _mv_f16, _mm_f16, "file rows as u16 (view)"))
register("BF16", Layout(1, _view(np.uint16), lambda c: (), _mv_bf16, _mm_bf16, "file rows as u16 (view)"))
