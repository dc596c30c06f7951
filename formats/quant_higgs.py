"""HIGGS quantization (data-free): rotate, scale to unit variance, round p-tuples to a Gaussian grid.

Per row: every h-block is rotated by the orthonormal Walsh-Hadamard transform (formats/hadamard.py), which spreads
each block's outliers over all its values so they look Gaussian. Every group of s rotated values (s divides h) gets
one scale, and its p-tuples are rounded to the nearest point of the grid that is MSE-optimal for N(0, I_p)
(formats/higgs_grids.py). The scale starts at the group's RMS (the grid's unit) and is refined by alternating
least squares: the best scale for the chosen points, then the points for that scale, kept while the error falls.
A weight is then scale * grid[code][k] in the rotated basis; decoding undoes the rotation.

HiggsSpec and quantize() explore variants (any p, grid, block and group size: bench/higgs_quality.py); the file
types HG4, HG3, HG2 (higgs_types.py) are p = 2 with 64-blocks: quantize_rows, then pack_blocks (QUANTIZERS).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from . import higgs_grids, higgs_types
from .hadamard import fwht_row, is_block_size
from .higgs_grids import nearest_point
from .higgs_types import BLOCK, HIGGS_TYPES, PAIRS, put_codes
from .quant_common import put_f16

REFITS = 2  # least-squares scale refits per group (each: new scale, new points)


class HiggsSpec(NamedTuple):
    p: int  # values per grid point
    n: int  # grid points
    h: int  # Hadamard block (a power of two; 1: no rotation)
    s: int  # values per scale (divides h, unless h is 1)

    @property
    def grid(self) -> np.ndarray:
        return higgs_grids.grid(self.p, self.n)

    def check_row(self, cols: int) -> None:
        if not is_block_size(self.h) or (self.h > 1 and self.h % self.s) or self.s % self.p:
            raise ValueError(f"HIGGS block {self.h} / scale group {self.s} / p {self.p} do not nest")
        if cols % self.h:
            raise ValueError(f"a row of {cols} values is not a multiple of the HIGGS block size {self.h}")


@njit(cache=True, inline="always")
def _round_group(grid, v, o, s, inv, codes, c0, z):
    """Codes of v[o:o + s] * inv into codes[c0:] (z: scratch of p values); returns (<v, g>, <g, g>) for the
    least-squares scale."""
    p = grid.shape[1]
    vg, gg = np.float32(0.0), np.float32(0.0)
    for t in range(s // p):
        for k in range(p):
            z[k] = v[o + t * p + k] * inv
        c = nearest_point(grid, z, 0)
        codes[c0 + t] = c
        for k in range(p):
            vg += v[o + t * p + k] * grid[c, k]
            gg += grid[c, k] * grid[c, k]
    return vg, gg


@njit(cache=True)
def _quantize_group(grid, v, o, s, codes, c0, trial, z):
    """Codes and scale of one group: the better of two starts (the RMS, the grid's unit; and the largest value on
    the grid's largest coordinate, for a block whose energy sits in a few values, such as a constant one, rotated),
    then REFITS least-squares rounds kept while the error falls."""
    p = grid.shape[1]
    ss = np.float32(0.0)
    amax = np.float32(0.0)
    for j in range(o, o + s):
        ss += v[j] * v[j]
        amax = max(amax, abs(v[j]))
    if ss == 0:
        codes[c0:c0 + s // p] = 0
        return np.float32(0.0)
    best_err = np.inf
    vg, gg = np.float32(0.0), np.float32(1.0)
    for start in (np.sqrt(ss / np.float32(s)), amax / np.abs(grid).max()):
        vg2, gg2 = _round_group(grid, v, o, s, np.float32(1.0) / start, trial, 0, z)
        err = ss - vg2 * vg2 / gg2 if gg2 > 0 else ss
        if err < best_err:
            best_err, vg, gg = err, vg2, gg2
            codes[c0:c0 + s // p] = trial[:s // p]
    scale = vg / gg
    for _ in range(REFITS):
        new_scale = vg / gg
        if new_scale <= 0:
            break
        vg2, gg2 = _round_group(grid, v, o, s, np.float32(1.0) / new_scale, trial, 0, z)
        fit = vg2 / gg2            # the best scale for the new points
        err = ss - vg2 * vg2 / gg2
        if err >= best_err:
            break
        best_err, scale, vg, gg = err, fit, vg2, gg2
        codes[c0:c0 + s // p] = trial[:s // p]
    return scale


@njit(cache=True, parallel=True)
def quantize_rows(codes, scales, x, grid, h, s):
    """codes (rows, cols / p) uint8 and scales (rows, cols / s) float32 of x (rows, cols) float32."""
    p = grid.shape[1]
    for r in prange(x.shape[0]):
        v = x[r].copy()
        fwht_row(v, h)
        trial = np.empty(s // p, np.uint8)
        z = np.empty(p, np.float32)
        for g in range(x.shape[1] // s):
            scales[r, g] = _quantize_group(grid, v, g * s, s, codes[r], g * s // p, trial, z)


@njit(cache=True, parallel=True)
def dequantize_rows(out, codes, scales, grid, h, s):
    """out (rows, cols) float32 = the decoded rows, rotated back."""
    p = grid.shape[1]
    for r in prange(out.shape[0]):
        v = out[r]
        for t in range(codes.shape[1]):
            sc = scales[r, t * p // s]
            for k in range(p):
                v[t * p + k] = sc * grid[codes[r, t], k]
        fwht_row(v, h)


def quantize(x: np.ndarray, spec: HiggsSpec) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8 (rows, cols / p), scales float16 (rows, cols / s)) of a 2-D float array."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, cols = x.shape
    spec.check_row(cols)
    codes = np.empty((rows, cols // spec.p), np.uint8)
    scales = np.empty((rows, cols // spec.s), np.float32)
    quantize_rows(codes, scales, x, spec.grid, spec.h, spec.s)
    return codes, scales.astype(np.float16)


def dequantize(codes: np.ndarray, scales: np.ndarray, spec: HiggsSpec) -> np.ndarray:
    rows = codes.shape[0]
    out = np.empty((rows, codes.shape[1] * spec.p), np.float32)
    dequantize_rows(out, codes, np.ascontiguousarray(scales, dtype=np.float32), spec.grid, spec.h, spec.s)
    return out


# ---------------------------------------------------------------- the file types HG4, HG3, HG2 (higgs_types.py)

@njit(cache=True, parallel=True, error_model="numpy")
def pack_blocks(out, codes, scales, points, type_size):
    """out (rows, row_bytes) uint8: per 64-block its scale as fp16, then its 32 codes in the type's layout."""
    for r in prange(out.shape[0]):
        for b in range(scales.shape[1]):
            put_f16(out[r], b * type_size, scales[r, b])
            put_codes(out[r], b * type_size + 2, codes[r, b * PAIRS:(b + 1) * PAIRS], points)


def _file_quantizer(name: str):
    g, (_, points, type_size) = higgs_types.grid(name), HIGGS_TYPES[name]

    def quantize_blocks(out, x, qw):
        """quant.QUANTIZERS' signature; data-free, so the importance matrix qw is not read. quantize_rows with
        p = 2 and 64-blocks, then the file's bytes."""
        codes = np.empty((x.shape[0], x.shape[1] // 2), np.uint8)
        scales = np.empty((x.shape[0], x.shape[1] // BLOCK), np.float32)
        quantize_rows(codes, scales, x, g, BLOCK, BLOCK)
        pack_blocks(out, codes, scales, points, type_size)
    quantize_blocks.__name__ = f"quant_{name.lower()}"
    return quantize_blocks


QUANTIZERS = {name: _file_quantizer(name) for name in HIGGS_TYPES}
