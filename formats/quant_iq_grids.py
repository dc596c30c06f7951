"""The lattice tables the IQ1-IQ3 quantizers search (llama.cpp's iq2xs_init_impl / iq3xs_init_impl), built once
per process from the gguf package's grids.

A grid point is `dim` small levels l (2 bits each for IQ1/IQ2's 8-element points, 3 bits for IQ3's 4-element
ones), stored as the odd codes 2l+1 the quantizers compare with scaled weights. Every level pattern u (the levels
packed `bits` apart) maps to
- its grid index, when u is a grid point (map[u] >= 0), or
- -(offset + 1) otherwise, where neighbours[offset] = n and neighbours[offset + 1 : offset + 1 + n] are the grid
  points at the `nwant` smallest squared distances from u, ordered by (distance, index): the candidates
  find_best_neighbour weighs, in the reference's order (its first strictly best one wins).

The neighbour lists of every type are byte for byte the reference's (same layout, same order), so a quantizer can
follow the C code's index arithmetic unchanged.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from gguf import quants as gq
from numba import njit, prange


class GridTables(NamedTuple):
    grid: np.ndarray  # int8 (grid_size, dim): the codes 2l+1 of every grid point
    map: np.ndarray  # int32 (1 << (bits * dim) truncated to the reference's kmap_size,)
    neighbours: np.ndarray  # uint16: per off-grid pattern, a count and that many grid indices


class _Spec(NamedTuple):
    grid_class: type  # the gguf package's class holding the dequantization grid (same point order)
    bits: int  # bits per level in a pattern
    kmap_size: int  # the reference's map length (patterns above it never occur)
    nwant: int  # how many distinct distances the neighbour lists reach


# The reference's constants (ggml-quants.c): IQ1_S and IQ1_M share the 2048-point 1-bit grid.
_SPECS = {
    "IQ2_XXS": _Spec(gq.IQ2_XXS, 2, 43692, 2),
    "IQ2_XS": _Spec(gq.IQ2_XS, 2, 43692, 2),
    "IQ2_S": _Spec(gq.IQ2_S, 2, 43692, 1),
    "IQ1_S": _Spec(gq.IQ1_S, 2, 43692, 3),
    "IQ1_M": _Spec(gq.IQ1_S, 2, 43692, 3),
    "IQ3_XXS": _Spec(gq.IQ3_XXS, 3, 4096, 2),
    "IQ3_S": _Spec(gq.IQ3_S, 3, 4096, 3),
}


def _levels(grid_class) -> np.ndarray:
    """The gguf grid's values as levels 0, 1, 2, ...: its distinct values are the levels' images, ascending."""
    grid_class.init_grid()
    values = np.asarray(grid_class.grid).reshape(grid_class.grid_shape)
    return np.searchsorted(np.unique(values), values).astype(np.int64)


@njit(cache=True)
def _distances(grid, u, bits, dim, d2):
    for j in range(grid.shape[0]):
        s = 0
        for k in range(dim):
            diff = np.int64(grid[j, k]) - (2 * ((u >> (bits * k)) & ((1 << bits) - 1)) + 1)
            s += diff * diff
        d2[j] = s


@njit(cache=True)
def _cutoff(d2, nwant):
    """The nwant-th smallest distinct value of d2 (or the largest, if it has fewer), and how many values are at
    most that: the reference's sorted walk that stops at the (nwant + 1)-th distance."""
    level = -1
    for _ in range(nwant):
        nxt = -1
        for v in d2:
            if v > level and (nxt < 0 or v < nxt):
                nxt = v
        if nxt < 0:
            break
        level = nxt
    n = 0
    for v in d2:
        if v <= level:
            n += 1
    return level, n


@njit(parallel=True, cache=True)
def _neighbour_tables(grid, kmap, bits, nwant):
    size = kmap.shape[0]
    grid_size, dim = grid.shape
    counts = np.zeros(size, np.int64)
    for u in prange(size):
        if kmap[u] < 0:
            d2 = np.empty(grid_size, np.int64)
            _distances(grid, u, bits, dim, d2)
            counts[u] = _cutoff(d2, nwant)[1]
    offsets = np.empty(size, np.int64)
    total = 0
    for u in range(size):
        offsets[u] = total
        if kmap[u] < 0:
            total += 1 + counts[u]
    neighbours = np.empty(total, np.uint16)
    for u in prange(size):
        if kmap[u] >= 0:
            continue
        d2 = np.empty(grid_size, np.int64)
        _distances(grid, u, bits, dim, d2)
        level, n = _cutoff(d2, nwant)
        p = offsets[u]
        neighbours[p] = n
        p += 1
        # ordered by (distance, index): each distance in turn, indices ascending
        done = -1
        while done < level:
            cur = level
            for v in d2:
                if done < v < cur:
                    cur = v
            for j in range(grid_size):
                if d2[j] == cur:
                    neighbours[p] = j
                    p += 1
            done = cur
        kmap[u] = -(offsets[u] + 1)
    return neighbours


@lru_cache(maxsize=None)
def grid_tables(type_name: str) -> GridTables:
    """The tables of one IQ1-IQ3 type, built on first use (about a second for the 2048-point grid)."""
    spec = _SPECS[type_name]
    levels = _levels(spec.grid_class)
    dim = levels.shape[1]
    patterns = (levels << (spec.bits * np.arange(dim))).sum(axis=1)
    kmap = np.full(spec.kmap_size, -1, dtype=np.int32)
    kmap[patterns] = np.arange(len(levels), dtype=np.int32)
    neighbours = _neighbour_tables(levels.astype(np.int8) * 2 + 1, kmap, spec.bits, spec.nwant)
    for a in (kmap, neighbours):
        a.flags.writeable = False
    return GridTables((levels * 2 + 1).astype(np.int8), kmap, neighbours)
