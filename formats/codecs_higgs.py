"""HIGGS types HG4, HG3, HG2 (formats/higgs_types.py): a block's 32 codes looked up on the type's grid, scaled by its
fp16 d, and rotated back by the orthonormal Walsh-Hadamard transform (its own inverse)."""
import numpy as np
from numba import njit, prange

from .blocks import block
from .codecs_common import F16_TO_F32, decode_blocks, u16
from .hadamard import fwht_block
from .higgs_types import BLOCK, HIGGS_TYPES, PAIRS, code_at, grid

_HG = block("HG4")  # the three types lay out d and then their codes alike
assert all(block(name)[:2] == _HG[:2] for name in HIGGS_TYPES)


@njit(cache=True, inline="always")
def _hg(dst, o, src, s, tables):
    f16, g = tables
    d = f16[u16(src, s + _HG.d)]
    points = g.shape[0]
    for t in range(PAIRS):
        c = code_at(src, s + _HG.codes, t, points)
        dst[o + 2 * t] = d * g[c, 0]
        dst[o + 2 * t + 1] = d * g[c, 1]
    fwht_block(dst, o, BLOCK)


@njit(parallel=True, cache=True)
def dequant_higgs(out, raw, rows, f16, g, type_size):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], type_size, BLOCK, _hg, (f16, g))


CODECS = {name: (dequant_higgs, (F16_TO_F32, grid(name), np.int64(size)))
          for name, (_, _, size) in HIGGS_TYPES.items()}
