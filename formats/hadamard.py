"""The orthonormal Walsh-Hadamard transform over consecutive blocks of a row (HIGGS's rotation).

H_h / sqrt(h) for a power of two h is symmetric and its own inverse, so one function rotates weights before
rounding, undoes the rotation after decoding, and rotates activations at run time: (H w) . (H x) = w . x.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


def is_block_size(h: int) -> bool:
    return h >= 1 and h & (h - 1) == 0


@njit(cache=True, inline="always")
def fwht_block(v, start, h):
    """v[start:start + h] <- H_h v[start:start + h] / sqrt(h), in place (h a power of two)."""
    step = 1
    while step < h:
        for i in range(start, start + h, 2 * step):
            for j in range(i, i + step):
                a, b = v[j], v[j + step]
                v[j], v[j + step] = a + b, a - b
        step *= 2
    norm = np.float32(1.0 / np.sqrt(np.float64(h)))
    for j in range(start, start + h):
        v[j] *= norm


@njit(cache=True)
def fwht_row(v, h):
    """Every h-block of the 1-D float32 row v, in place."""
    for start in range(0, v.shape[0], h):
        fwht_block(v, start, h)


@njit(cache=True, parallel=True)
def fwht_rows(x, h):
    """Every h-block of every row of the 2-D float32 array x, in place."""
    for r in prange(x.shape[0]):
        fwht_row(x[r], h)


def rotated(x: np.ndarray, h: int) -> np.ndarray:
    """A float32 copy of x (rows, cols) with every h-block of every row transformed; cols % h == 0."""
    out = np.array(x, dtype=np.float32, order="C", copy=True).reshape(-1, x.shape[-1])
    fwht_rows(out, h)
    return out.reshape(x.shape)
