"""IQ quants: IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S (lattice grids), IQ4_NL, IQ4_XS (non-linear).

The grids, ksigns and kvalues come from the gguf package (quants.py) once, at import, and are passed to the
kernels as arrays. Products follow the reference's order, (db * grid) * sign and dl * (grid + delta).
Each type is a block decoder _<type>(dst, o, src, s, tables) run over the rows by codecs_common.decode_blocks.
"""
import numpy as np
from gguf import quants as gq
from numba import njit, prange

from .blocks import block
from .codecs_common import F16_TO_F32, decode_blocks, sign_bit, u16, u32

IQ2XXS, IQ2XS, IQ2S, IQ3XXS, IQ3S, IQ1S, IQ1M, IQ4NL, IQ4XS = (block(name) for name in (
    "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS"))


def _grid(cls) -> np.ndarray:
    cls.init_grid()
    return np.ascontiguousarray(cls.grid.reshape(cls.grid_shape), dtype=np.float32)


GRID_IQ2_XXS = _grid(gq.IQ2_XXS)  # (256, 8)
GRID_IQ2_XS = _grid(gq.IQ2_XS)  # (512, 8)
GRID_IQ2_S = _grid(gq.IQ2_S)  # (1024, 8)
GRID_IQ3_XXS = _grid(gq.IQ3_XXS)  # (256, 4)
GRID_IQ3_S = _grid(gq.IQ3_S)  # (512, 4)
GRID_IQ1_S = _grid(gq.IQ1_S)  # (2048, 8), values -1, 0, 1; IQ1_M shares it
KSIGNS = np.frombuffer(gq.IQ2_XXS.ksigns, dtype=np.uint8).copy()  # 7 sign bits + parity bit
KVALUES_IQ4NL = np.array(gq.IQ4_NL.kvalues, dtype=np.float32)
IQ1_DELTA = np.float32(gq.IQ1_S.delta)


@njit(cache=True, inline="always")
def _iq2_xxs(dst, o, src, s, tables):  # d, 8 x (4 grid-index bytes, u32 4x7 sign bits + scale)
    f16, grid, ksigns = tables
    d = f16[u16(src, s + IQ2XXS.d)]
    for ib in range(8):
        p = s + IQ2XXS.qs + 8 * ib
        aux = u32(src, p + 4)
        db = d * (np.float32(0.5) + np.float32(aux >> 28)) * np.float32(0.25)
        for l in range(4):
            idx = src[p + l]
            signs = ksigns[(aux >> (7 * l)) & 127]
            od = o + ib * 32 + l * 8
            for j in range(8):
                dst[od + j] = db * grid[idx, j] * sign_bit(signs, j)


@njit(cache=True, inline="always")
def _iq2_xs(dst, o, src, s, tables):  # d, u16 qs[32] (9-bit index, 7-bit signs), scales[8]
    f16, grid, ksigns = tables
    d = f16[u16(src, s + IQ2XS.d)]
    for m in range(32):  # 8 elements each; 4-bit scale per 16 elements
        v = u16(src, s + IQ2XS.qs + 2 * m)
        g = m >> 1
        sc = (np.int64(src[s + IQ2XS.scales + (g >> 1)]) >> (4 * (g & 1))) & 15
        db = d * (np.float32(0.5) + np.float32(sc)) * np.float32(0.25)
        idx = v & 511
        signs = ksigns[v >> 9]
        od = o + m * 8
        for j in range(8):
            dst[od + j] = db * grid[idx, j] * sign_bit(signs, j)


@njit(cache=True, inline="always")
def _iq2_s(dst, o, src, s, tables):  # d, qs[32] index bytes, signs[32], qh[8], scales[8]
    f16, grid = tables
    d = f16[u16(src, s + IQ2S.d)]
    for m in range(32):
        g = m >> 1
        sc = (np.int64(src[s + IQ2S.scales + (g >> 1)]) >> (4 * (g & 1))) & 15
        db = d * (np.float32(0.5) + np.float32(sc)) * np.float32(0.25)
        idx = np.int64(src[s + IQ2S.qs + m]) | (((np.int64(src[s + IQ2S.qh + (m >> 2)]) >> (2 * (m & 3))) & 3) << 8)
        signs = src[s + IQ2S.signs + m]
        od = o + m * 8
        for j in range(8):
            dst[od + j] = db * grid[idx, j] * sign_bit(signs, j)


@njit(cache=True, inline="always")
def _iq3_xxs(dst, o, src, s, tables):  # d, qs[64] index bytes, 8 x u32 (4x7 signs + scale)
    f16, grid, ksigns = tables
    d = f16[u16(src, s + IQ3XXS.d)]
    for ib in range(8):
        aux = u32(src, s + IQ3XXS.sas + 4 * ib)
        db = d * (np.float32(0.5) + np.float32(aux >> 28)) * np.float32(0.5)
        for l in range(4):
            signs = ksigns[(aux >> (7 * l)) & 127]
            od = o + ib * 32 + l * 8
            for j in range(8):  # two grid entries of 4 values
                idx = src[s + IQ3XXS.qs + ib * 8 + l * 2 + (j >> 2)]
                dst[od + j] = db * grid[idx, j & 3] * sign_bit(signs, j)


@njit(cache=True, inline="always")
def _iq3_s(dst, o, src, s, tables):  # d, qs[64], qh[8], signs[32], scales[4]; db = d (1 + 2 s)
    f16, grid = tables
    d = f16[u16(src, s + IQ3S.d)]
    for k in range(8):
        sc = (np.int64(src[s + IQ3S.scales + (k >> 1)]) >> (4 * (k & 1))) & 15
        db = d * np.float32(1 + 2 * sc)
        for e in range(k * 32, k * 32 + 32):
            m = e >> 2
            idx = np.int64(src[s + IQ3S.qs + m]) | (((np.int64(src[s + IQ3S.qh + (m >> 3)]) >> (m & 7)) & 1) << 8)
            dst[o + e] = db * grid[idx, e & 3] * sign_bit(src[s + IQ3S.signs + (e >> 3)], e & 7)


@njit(cache=True, inline="always")
def _iq1_s(dst, o, src, s, tables):  # d, qs[32], u16 qh[8]; x = d (2s+1) (grid +- delta)
    f16, grid, delta = tables
    d = f16[u16(src, s + IQ1S.d)]
    for ib in range(8):
        h = u16(src, s + IQ1S.qh + 2 * ib)
        dl = d * np.float32(2 * ((h >> 12) & 7) + 1)
        dlt = -delta if h & 0x8000 else delta
        for l in range(4):
            idx = np.int64(src[s + IQ1S.qs + ib * 4 + l]) | (((h >> (3 * l)) & 7) << 8)
            od = o + ib * 32 + l * 8
            for j in range(8):
                dst[od + j] = dl * (grid[idx, j] + dlt)


@njit(cache=True, inline="always")
def _iq1_m(dst, o, src, s, tables):  # qs[32], qh[16], u16 scales[4] (fp16 d in top nibbles)
    f16, grid, delta = tables
    p = s + IQ1M.scales
    d = f16[(u16(src, p) >> 12) | ((u16(src, p + 2) >> 8) & 0xF0)
            | ((u16(src, p + 4) >> 4) & 0xF00) | (u16(src, p + 6) & 0xF000)]
    for m in range(32):  # 8 elements each; a 3-bit scale per 16 elements
        k = m >> 1
        sc = (u16(src, p + 2 * (k >> 2)) >> (3 * (k & 3))) & 7
        dl = d * np.float32(2 * sc + 1)
        hq = (np.int64(src[s + IQ1M.qh + (m >> 1)]) >> (4 * (m & 1))) & 15
        idx = np.int64(src[s + IQ1M.qs + m]) | ((hq & 7) << 8)
        dlt = -delta if hq & 8 else delta
        od = o + m * 8
        for j in range(8):
            dst[od + j] = dl * (grid[idx, j] + dlt)


@njit(cache=True, inline="always")
def _iq4_nl(dst, o, src, s, tables):  # d, qs[16]; x = d kvalues[nibble]
    f16, kvalues = tables
    d = f16[u16(src, s + IQ4NL.d)]
    for j in range(16):
        q = src[s + IQ4NL.qs + j]
        dst[o + j] = d * kvalues[q & 15]
        dst[o + 16 + j] = d * kvalues[q >> 4]


@njit(cache=True, inline="always")
def _iq4_xs(dst, o, src, s, tables):  # d, u16 scales_h, scales_l[4], qs[128]; dl = d (ls - 32)
    f16, kvalues = tables
    d = f16[u16(src, s + IQ4XS.d)]
    scales_h = u16(src, s + IQ4XS.scales_h)
    for k in range(8):
        ls = ((np.int64(src[s + IQ4XS.scales_l + (k >> 1)]) >> (4 * (k & 1))) & 15) | (((scales_h >> (2 * k)) & 3) << 4)
        dl = d * np.float32(ls - 32)
        od = o + k * 32
        for j in range(16):
            q = src[s + IQ4XS.qs + k * 16 + j]
            dst[od + j] = dl * kvalues[q & 15]
            dst[od + 16 + j] = dl * kvalues[q >> 4]


@njit(parallel=True, cache=True)
def dequant_iq2_xxs(out, raw, rows, f16, grid, ksigns):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], IQ2XXS.size, 256, _iq2_xxs, (f16, grid, ksigns))


@njit(parallel=True, cache=True)
def dequant_iq2_xs(out, raw, rows, f16, grid, ksigns):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], IQ2XS.size, 256, _iq2_xs, (f16, grid, ksigns))


@njit(parallel=True, cache=True)
def dequant_iq2_s(out, raw, rows, f16, grid):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], IQ2S.size, 256, _iq2_s, (f16, grid))


@njit(parallel=True, cache=True)
def dequant_iq3_xxs(out, raw, rows, f16, grid, ksigns):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], IQ3XXS.size, 256, _iq3_xxs, (f16, grid, ksigns))


@njit(parallel=True, cache=True)
def dequant_iq3_s(out, raw, rows, f16, grid):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], IQ3S.size, 256, _iq3_s, (f16, grid))


@njit(parallel=True, cache=True)
def dequant_iq1_s(out, raw, rows, f16, grid, delta):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], IQ1S.size, 256, _iq1_s, (f16, grid, delta))


@njit(parallel=True, cache=True)
def dequant_iq1_m(out, raw, rows, f16, grid, delta):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], IQ1M.size, 256, _iq1_m, (f16, grid, delta))


@njit(parallel=True, cache=True)
def dequant_iq4_nl(out, raw, rows, f16, kvalues):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], IQ4NL.size, 32, _iq4_nl, (f16, kvalues))


@njit(parallel=True, cache=True)
def dequant_iq4_xs(out, raw, rows, f16, kvalues):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], IQ4XS.size, 256, _iq4_xs, (f16, kvalues))


CODECS = {
    "IQ2_XXS": (dequant_iq2_xxs, (F16_TO_F32, GRID_IQ2_XXS, KSIGNS)),
    "IQ2_XS": (dequant_iq2_xs, (F16_TO_F32, GRID_IQ2_XS, KSIGNS)),
    "IQ2_S": (dequant_iq2_s, (F16_TO_F32, GRID_IQ2_S)),
    "IQ3_XXS": (dequant_iq3_xxs, (F16_TO_F32, GRID_IQ3_XXS, KSIGNS)),
    "IQ3_S": (dequant_iq3_s, (F16_TO_F32, GRID_IQ3_S)),
    "IQ1_S": (dequant_iq1_s, (F16_TO_F32, GRID_IQ1_S, IQ1_DELTA)),
    "IQ1_M": (dequant_iq1_m, (F16_TO_F32, GRID_IQ1_S, IQ1_DELTA)),
    "IQ4_NL": (dequant_iq4_nl, (F16_TO_F32, KVALUES_IQ4NL)),
    "IQ4_XS": (dequant_iq4_xs, (F16_TO_F32, KVALUES_IQ4NL)),
}
