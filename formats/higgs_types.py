"""kvant's own HIGGS tensor types HG4, HG3, HG2: their ids, block layouts, grids and the metadata that pins them.

A block is 64 consecutive values of a row: one Hadamard block (formats/hadamard.py) with one scale. Rotated, its
values 2t and 2t + 1 are d * grid[code t] for t = 0..31 (formats/quant_higgs.py rounds them there). Bytes of a block:
fp16 d, then the 32 codes:
  HG4  256-point grid, 34 bytes (4.25 bits a weight): code t is byte t.
  HG3   64-point grid, 26 bytes (3.25): the low 4 bits as nibbles (byte j: code j low, code j + 16 high), then the
        top 2 bits as crumbs (byte j, bits 2k and 2k + 1: code j + 8k).
  HG2   16-point grid, 18 bytes (2.25): nibbles (byte j: code j low, code j + 16 high).
The grids are higgs_grids' p = 2 grids (MSE-optimal for a standard Gaussian pair) rounded to multiples of their
type's step, the largest coordinate / 127 (grid_step), so the integer kernels hold every coordinate exactly as an
int8 q (grid_codes; |q| <= 127, one byte table a coordinate). Version 1 rounded to 2^-11 (int16 tables), version 2
to 2^-5 for every type: SmolLM2's HG3 perplexity moves by tens of percent with the step and not monotonically
(bench/RESULTS.md, HIGGS V3 ZEN4), the finest int8 step measured best of those tried.

The ids lie outside ggml's range (llama.cpp refuses such a tensor: "invalid ggml type"). A file that holds one
records `kvant.higgs.version` and the grid of each HIGGS type it uses under `kvant.higgs.grid.<TYPE>`; a reader
refuses a file whose version or grids are not its own, since its codes mean nothing on another grid.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

from . import higgs_grids

VERSION = 3                     # 1: grids in multiples of 2^-11; 2: of 2^-5, HG4 asymmetric
BLOCK = 64                      # values per block: the Hadamard block and the scale group
PAIRS = BLOCK // 2              # codes per block
Q_MAX = 127                     # the grid's largest coordinate in steps
KEY_PREFIX = "kvant.higgs."
KEY_VERSION = KEY_PREFIX + "version"
KEY_GRID = KEY_PREFIX + "grid."  # + type name

# name -> (type id, grid points, bytes per block); the registry (ggml_types) reads this table
HIGGS_TYPES: dict[str, tuple[int, int, int]] = {
    "HG4": (4096, 256, 2 + PAIRS),
    "HG3": (4097, 64, 2 + PAIRS * 3 // 4),
    "HG2": (4098, 16, 2 + PAIRS // 2),
}


class HiggsFileError(ValueError):
    """A file whose HIGGS version or grid is not this kvant's."""


def is_higgs(type_name: str) -> bool:
    return str(type_name).upper() in HIGGS_TYPES


def _lloyd(type_name: str) -> np.ndarray:
    return higgs_grids.grid(2, HIGGS_TYPES[type_name][1]).astype(np.float64)


def grid_step(type_name: str) -> float:
    """The type's step (a float32 value): its grid is int8 multiples of it, the largest Q_MAX."""
    return float(np.float32(np.abs(_lloyd(type_name)).max() / Q_MAX))


@lru_cache(maxsize=None)
def grid_codes(type_name: str) -> np.ndarray:
    """The type's (points, 2) grid in steps: int8 values q as int64 (for shifting and masking), read-only."""
    q = np.round(_lloyd(type_name) / grid_step(type_name)).astype(np.int64)
    if np.abs(q).max() > Q_MAX:     # the kernels' bytes q + 128 and their negations need |q| <= 127
        raise ValueError(f"the {type_name} grid does not fit int8 steps")
    q.setflags(write=False)
    return q


@lru_cache(maxsize=None)
def grid(type_name: str) -> np.ndarray:
    """The type's (points, 2) float32 grid, q * step, read-only."""
    g = (grid_codes(type_name) * grid_step(type_name)).astype(np.float32)
    g.setflags(write=False)
    return g


def _used(type_names) -> list[str]:
    """The HIGGS types among type names, sorted."""
    return sorted({str(t).upper() for t in type_names} & set(HIGGS_TYPES))


def metadata(type_names) -> list[tuple[str, object]]:
    """The (key, value) pairs a file holding tensors of these types must carry (empty if none is HIGGS)."""
    used = _used(type_names)
    if not used:
        return []
    return [(KEY_VERSION, np.uint32(VERSION))] + [(KEY_GRID + t, grid(t).reshape(-1)) for t in used]


def check_metadata(meta: dict, type_names, where: str) -> None:
    """Raise HiggsFileError unless the file's version and grids are this kvant's for every HIGGS type it uses."""
    used = _used(type_names)
    if not used:
        return
    version = meta.get(KEY_VERSION)
    if version is None or isinstance(version, (str, bool, list, np.ndarray)) or int(version) != VERSION:
        raise HiggsFileError(f"{where}: HIGGS version {version!r} (key {KEY_VERSION}), this kvant reads version "
                             f"{VERSION} only: quantize the source model again with this qconv")
    for t in used:
        got = meta.get(KEY_GRID + t)
        want = grid(t).reshape(-1)
        if not isinstance(got, np.ndarray) or got.shape != want.shape or not np.array_equal(got, want):
            raise HiggsFileError(f"{where}: the {t} grid in key {KEY_GRID + t} is not the one this kvant's {t} "
                                 f"codes index (version {VERSION})")


@njit(cache=True, inline="always")
def code_at(src, s, t, points):
    """Code t (0..31) of the block whose codes start at src[s] (after its fp16 d)."""
    return code_in(src, s, s + 16, t, points)


@njit(cache=True, inline="always")
def code_in(src, codes, crumbs, t, points):
    """Code t (0..31) of a block whose code bytes (or nibbles) start at src[codes] and crumbs at src[crumbs]."""
    if points == 256:
        return np.int64(src[codes + t])
    nib = (np.int64(src[codes + (t & 15)]) >> (4 * (t >> 4))) & 15
    if points == 16:
        return nib
    return nib | (((np.int64(src[crumbs + (t & 7)]) >> (2 * (t >> 3))) & 3) << 4)


@njit(cache=True, inline="always")
def put_codes(dst, s, codes, points):
    """The 32 codes (values < points) into the block's code bytes at dst[s]."""
    if points == 256:
        for t in range(PAIRS):
            dst[s + t] = codes[t]
        return
    for j in range(16):
        dst[s + j] = (codes[j] & 15) | ((codes[j + 16] & 15) << 4)
    if points == 64:
        for j in range(8):
            v = 0
            for k in range(4):
                v |= (np.int64(codes[j + 8 * k]) >> 4) << (2 * k)
            dst[s + 16 + j] = v
