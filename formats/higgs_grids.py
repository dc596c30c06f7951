"""HIGGS grids: the points that best round a standard Gaussian in p dimensions, n of them (MSE-optimal).

HIGGS (Malinovskii et al., NAACL 2025) rotates weights until they look Gaussian, scales them to unit variance and
rounds p-tuples to such a grid. The grids are data: made once by `python -m kvant.formats.higgs_grids`, which writes
formats/higgs_grid_data.py, and read from there ever after, so a file quantized today decodes the same tomorrow.

How they are made (deterministic: fixed seeds, serial sums):
- p = 1: Lloyd-Max on the exact Gaussian density (cell boundaries at midpoints, each level moved to its cell's
  conditional mean, computed with erf), to a fixed point.
- p = 2: Lloyd's algorithm (k-means) on 2^21 points drawn from N(0, I2) with seed 0 (numpy's PCG64), started from
  the product of two p = 1 grids when n is a square (4 x 4, 16 x 16) and from the first n samples sorted by radius
  otherwise; the nearest-point search runs in parallel, the centroid sums serially, so every run gives the same
  bits. Points are then sorted by angle and radius so the table reads in a stable order.
- p = 2, n = 256 (SYMMETRIC): centrally symmetric, point c + n/2 is -(point c), so a kernel that looks the grid up
  from registers holds half of it and negates by the code's top bit (runtime/kernels/_lookup512.py: HG4's lookup
  halves). Lloyd on the same samples and their negations, from the product grid, stays symmetric up to rounding;
  the points with angle in (-pi, 0] are kept, in the order above, and followed by their exact negations (which
  makes it exact). Its mean squared error is
  0.13% above the unconstrained grid's of version 2 (0.007760 against 0.007750 per dimension, seed 1).
The mean squared error of each grid per dimension is checked on a fresh sample (seed 1) by tests.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit, prange

SAMPLES = 1 << 21
ITERATIONS = 300
SHAPES = ((1, 2), (1, 4), (1, 8), (1, 16), (2, 16), (2, 64), (2, 256))  # (p, n) the data module holds
SYMMETRIC = ((2, 256),)                                                  # (p, n) made centrally symmetric


def _pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x):
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def lloyd_max(n: int, iterations: int = 2000) -> np.ndarray:
    """The n-level MSE-optimal quantizer of N(0, 1), ascending (float64)."""
    levels = np.linspace(-2.0, 2.0, n) * (1.0 if n > 2 else 0.4)
    for _ in range(iterations):
        edges = np.concatenate(([-np.inf], (levels[1:] + levels[:-1]) / 2, [np.inf]))
        mass = _cdf(edges[1:]) - _cdf(edges[:-1])
        levels = (_pdf(edges[:-1]) - _pdf(edges[1:])) / mass     # E[X | a < X < b]
    return levels


@njit(cache=True, inline="always")
def nearest_point(grid, v, o):
    """Index of the grid point nearest v[o:o + p] (ties: the lower index), in the arrays' own precision."""
    best, arg = np.inf, 0
    for j in range(grid.shape[0]):
        e = v[o] - grid[j, 0]
        d = e * e
        for k in range(1, grid.shape[1]):
            e = v[o + k] - grid[j, k]
            d += e * e
        if d < best:
            best, arg = d, j
    return arg


@njit(cache=True, parallel=True)
def nearest(points, grid, out):
    """out[i] = index of the grid point nearest points[i] (ties: the lower index)."""
    for i in prange(points.shape[0]):
        out[i] = nearest_point(grid, points[i], 0)


@njit(cache=True)
def _centroids(points, assign, grid):
    sums = np.zeros(grid.shape)
    counts = np.zeros(grid.shape[0])
    for i in range(points.shape[0]):
        counts[assign[i]] += 1
        for k in range(points.shape[1]):
            sums[assign[i], k] += points[i, k]
    for j in range(grid.shape[0]):
        if counts[j]:
            grid[j] = sums[j] / counts[j]


def lloyd(p: int, n: int, samples: int = SAMPLES, iterations: int = ITERATIONS, symmetric: bool = False) -> np.ndarray:
    """The n-point grid of N(0, I_p) by Lloyd's algorithm on a fixed sample (float64, (n, p)); symmetric: the sample
    with its negation (from a symmetric start, the grid stays centrally symmetric)."""
    points = np.random.default_rng(0).standard_normal((samples, p))
    if symmetric:
        points = np.concatenate([points, -points])
    side = math.isqrt(n) if p == 2 else 0
    if p == 2 and side * side == n:
        axis = lloyd_max(side)
        grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(n, 2)
    else:
        first = points[:n]
        grid = first[np.argsort(np.hypot(*first.T) if p == 2 else first[:, 0])].copy()
    assign = np.empty(len(points), np.int64)
    for _ in range(iterations):
        nearest(points, grid, assign)
        _centroids(points, assign, grid)
    return grid


def mse(grid: np.ndarray, samples: int = 1 << 20, seed: int = 1) -> float:
    """Mean squared rounding error per dimension of N(0, I_p) on the grid."""
    points = np.random.default_rng(seed).standard_normal((samples, grid.shape[1]))
    assign = np.empty(samples, np.int64)
    nearest(points, grid.astype(np.float64), assign)
    return float(np.mean((points - grid[assign]) ** 2))


def _ordered(grid: np.ndarray) -> np.ndarray:
    if grid.shape[1] == 1:
        return np.sort(grid, axis=0)
    key = np.lexsort((np.hypot(grid[:, 0], grid[:, 1]).round(6), np.arctan2(grid[:, 1], grid[:, 0]).round(6)))
    return grid[key]


def _symmetric_order(grid: np.ndarray) -> np.ndarray:
    """The half with angle in (-pi, 0] in _ordered's order, then its exact negation."""
    half = _ordered(grid[np.arctan2(grid[:, 1] + 0.0, grid[:, 0]) <= 0])     # + 0.0: a -0.0 y is angle 0, not -pi
    assert 2 * len(half) == len(grid), "the grid is not centrally symmetric"
    return np.concatenate([half, -half])


def make(p: int, n: int) -> np.ndarray:
    if p == 1:
        return _ordered(lloyd_max(n)[:, None]).astype(np.float32)
    if (p, n) in SYMMETRIC:
        return _symmetric_order(lloyd(p, n, symmetric=True)).astype(np.float32)
    return _ordered(lloyd(p, n)).astype(np.float32)


@lru_cache(maxsize=None)
def grid(p: int, n: int) -> np.ndarray:
    """The stored (n, p) float32 grid (read-only)."""
    from .higgs_grid_data import GRIDS
    if (p, n) not in GRIDS:
        raise KeyError(f"no HIGGS grid with p={p} and n={n}")
    g = np.array(GRIDS[(p, n)], np.float32).reshape(n, p)
    g.setflags(write=False)
    return g


def _write_data(path: str) -> None:
    lines = ['"""HIGGS grids, written by `python -m kvant.formats.higgs_grids` (see higgs_grids.py): do not edit."""',
             "", "GRIDS = {"]
    for p, n in SHAPES:
        g = make(p, n)
        print(f"p={p} n={n:3d}  mse per dimension {mse(g):.6f}", flush=True)
        values = [repr(float(v)) for v in g.ravel()]
        rows = [", ".join(values[i:i + 6]) + "," for i in range(0, len(values), 6)]
        lines += [f"    ({p}, {n}): ("] + [f"        {r}" for r in rows] + ["    ),"]
    lines.append("}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    import os
    _write_data(os.path.join(os.path.dirname(os.path.abspath(__file__)), "higgs_grid_data.py"))
