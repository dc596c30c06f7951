"""F32, F16, BF16: no repack, the kernels read the mapped rows (views, 1.0x). fp16 / bf16 are widened in the loop
(vcvtph2ps for F16 through an LLVM fpext).

The matvec is one plain loop per row, rows in memory order: LLVM makes it 64 elements a step into four 16-lane FMA
accumulators, ~28 G weights/s per core from L1 (F16, BF16; F32 ~20), twice what one core's share of memory bandwidth
needs, so from memory it runs at the stream rate (2 threads, the 49152x576 SmolLM2 head out of cache: 55-65 GB/s,
bench/bandwidth.py's stream sum 53-55 GB/s, in quiet moments of this shared machine). Tried and measured against it
(bench/KERNELS.md): the same loop as LLVM IR with row chunks (no difference beyond noise), 2 or 4 rows sharing each
load of x (a few percent faster in cache, half the speed from memory: this CPU's prefetchers follow one sequential
stream per core, not interleaved rows), software prefetch 1-16 KB ahead (t0 / nta: 25-40% slower; t1: no gain)."""
import numpy as np
from numba import njit, prange

from ._isa import FAST
from ._common import F32, dot, float_matmul
from ._ir import bf16_to_f32, widen
from .registry import Layout, register


@njit(cache=True, fastmath=FAST)
def _dot_bf16(w, x):
    s = F32(0.0)
    for i in range(w.shape[0]):
        s += bf16_to_f32(w[i]) * x[i]
    return s


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_plain(out, x, w):
    """F32, and F16 rows as u16 (dot widens them)."""
    for r in prange(out.shape[0]):
        out[r] = dot(w[r], x)


@njit(cache=True, fastmath=FAST, parallel=True)
def _mv_bf16(out, x, w):
    for r in prange(out.shape[0]):
        out[r] = _dot_bf16(w[r], x)


@njit(cache=True)
def _dec_plain(dst, r, w):
    for i in range(dst.shape[0]):
        dst[i] = widen(w[r, i])


@njit(cache=True)
def _dec_bf16(dst, r, w):
    for i in range(dst.shape[0]):
        dst[i] = bf16_to_f32(w[r, i])


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_plain(out, x, w):
    float_matmul(out, x, _dec_plain, (w,))


@njit(cache=True, fastmath=FAST, parallel=True)
def _mm_bf16(out, x, w):
    float_matmul(out, x, _dec_bf16, (w,))


def _view(dtype):
    def repack(raw, cols):
        return (raw.view(dtype),)
    return repack


register("F32", Layout(1, _view(np.float32), lambda c: (), _mv_plain, _mm_plain, "file rows as f32 (view)"))
register("F16", Layout(1, _view(np.uint16), lambda c: (), _mv_plain, _mm_plain, "file rows as u16 (view)"))
register("BF16", Layout(1, _view(np.uint16), lambda c: (), _mv_bf16, _mm_bf16, "file rows as u16 (view)"))
