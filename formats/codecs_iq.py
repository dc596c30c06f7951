"""IQ quants: IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S (lattice grids), IQ4_NL, IQ4_XS (non-linear).

The grids, ksigns and kvalues come from the gguf package (quants.py) once, at import, and are passed to the
kernels as arrays. Products follow the reference's order, (db * grid) * sign and dl * (grid + delta).
"""
import numpy as np
from gguf import quants as gq
from numba import njit, prange

from .codecs_common import F16_TO_F32, sign_bit, u16, u32


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


@njit(parallel=True, cache=True)
def dequant_iq2_xxs(out, raw, rows, f16, grid, ksigns):  # d, 8 x (4 grid-index bytes, u32 4x7 sign bits + scale)
    nb = raw.shape[1] // 66
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 66
            d = f16[u16(src, s)]
            for ib in range(8):
                p = s + 2 + 8 * ib
                aux = u32(src, p + 4)
                db = d * (np.float32(0.5) + np.float32(aux >> 28)) * np.float32(0.25)
                for l in range(4):
                    idx = src[p + l]
                    signs = ksigns[(aux >> (7 * l)) & 127]
                    o = b * 256 + ib * 32 + l * 8
                    for j in range(8):
                        dst[o + j] = db * grid[idx, j] * sign_bit(signs, j)


@njit(parallel=True, cache=True)
def dequant_iq2_xs(out, raw, rows, f16, grid, ksigns):  # d, u16 qs[32] (9-bit index, 7-bit signs), scales[8]
    nb = raw.shape[1] // 74
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 74
            d = f16[u16(src, s)]
            for m in range(32):  # 8 elements each; 4-bit scale per 16 elements
                v = u16(src, s + 2 + 2 * m)
                g = m >> 1
                sc = (np.int64(src[s + 66 + (g >> 1)]) >> (4 * (g & 1))) & 15
                db = d * (np.float32(0.5) + np.float32(sc)) * np.float32(0.25)
                idx = v & 511
                signs = ksigns[v >> 9]
                o = b * 256 + m * 8
                for j in range(8):
                    dst[o + j] = db * grid[idx, j] * sign_bit(signs, j)


@njit(parallel=True, cache=True)
def dequant_iq2_s(out, raw, rows, f16, grid):  # d, qs[32] index bytes, signs[32], qh[8], scales[8]
    nb = raw.shape[1] // 82
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 82
            d = f16[u16(src, s)]
            for m in range(32):
                g = m >> 1
                sc = (np.int64(src[s + 74 + (g >> 1)]) >> (4 * (g & 1))) & 15
                db = d * (np.float32(0.5) + np.float32(sc)) * np.float32(0.25)
                idx = np.int64(src[s + 2 + m]) | (((np.int64(src[s + 66 + (m >> 2)]) >> (2 * (m & 3))) & 3) << 8)
                signs = src[s + 34 + m]
                o = b * 256 + m * 8
                for j in range(8):
                    dst[o + j] = db * grid[idx, j] * sign_bit(signs, j)


@njit(parallel=True, cache=True)
def dequant_iq3_xxs(out, raw, rows, f16, grid, ksigns):  # d, qs[64] index bytes, 8 x u32 (4x7 signs + scale)
    nb = raw.shape[1] // 98
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 98
            d = f16[u16(src, s)]
            for ib in range(8):
                aux = u32(src, s + 66 + 4 * ib)
                db = d * (np.float32(0.5) + np.float32(aux >> 28)) * np.float32(0.5)
                for l in range(4):
                    signs = ksigns[(aux >> (7 * l)) & 127]
                    o = b * 256 + ib * 32 + l * 8
                    for j in range(8):  # two grid entries of 4 values
                        idx = src[s + 2 + ib * 8 + l * 2 + (j >> 2)]
                        dst[o + j] = db * grid[idx, j & 3] * sign_bit(signs, j)


@njit(parallel=True, cache=True)
def dequant_iq3_s(out, raw, rows, f16, grid):  # d, qs[64], qh[8], signs[32], scales[4]; db = d (1 + 2 s)
    nb = raw.shape[1] // 110
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 110
            d = f16[u16(src, s)]
            for k in range(8):
                sc = (np.int64(src[s + 106 + (k >> 1)]) >> (4 * (k & 1))) & 15
                db = d * np.float32(1 + 2 * sc)
                for e in range(k * 32, k * 32 + 32):
                    m = e >> 2
                    idx = np.int64(src[s + 2 + m]) | (((np.int64(src[s + 66 + (m >> 3)]) >> (m & 7)) & 1) << 8)
                    dst[b * 256 + e] = db * grid[idx, e & 3] * sign_bit(src[s + 74 + (e >> 3)], e & 7)


@njit(parallel=True, cache=True)
def dequant_iq1_s(out, raw, rows, f16, grid, delta):  # d, qs[32], u16 qh[8]; x = d (2s+1) (grid +- delta)
    nb = raw.shape[1] // 50
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 50
            d = f16[u16(src, s)]
            for ib in range(8):
                h = u16(src, s + 34 + 2 * ib)
                dl = d * np.float32(2 * ((h >> 12) & 7) + 1)
                dlt = -delta if h & 0x8000 else delta
                for l in range(4):
                    idx = np.int64(src[s + 2 + ib * 4 + l]) | (((h >> (3 * l)) & 7) << 8)
                    o = b * 256 + ib * 32 + l * 8
                    for j in range(8):
                        dst[o + j] = dl * (grid[idx, j] + dlt)


@njit(parallel=True, cache=True)
def dequant_iq1_m(out, raw, rows, f16, grid, delta):  # qs[32], qh[16], u16 scales[4] (fp16 d in top nibbles)
    nb = raw.shape[1] // 56
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 56
            p = s + 48
            d = f16[(u16(src, p) >> 12) | ((u16(src, p + 2) >> 8) & 0xF0)
                    | ((u16(src, p + 4) >> 4) & 0xF00) | (u16(src, p + 6) & 0xF000)]
            for m in range(32):  # 8 elements each; a 3-bit scale per 16 elements
                k = m >> 1
                sc = (u16(src, p + 2 * (k >> 2)) >> (3 * (k & 3))) & 7
                dl = d * np.float32(2 * sc + 1)
                hq = (np.int64(src[s + 32 + (m >> 1)]) >> (4 * (m & 1))) & 15
                idx = np.int64(src[s + m]) | ((hq & 7) << 8)
                dlt = -delta if hq & 8 else delta
                o = b * 256 + m * 8
                for j in range(8):
                    dst[o + j] = dl * (grid[idx, j] + dlt)


@njit(parallel=True, cache=True)
def dequant_iq4_nl(out, raw, rows, f16, kvalues):  # d, qs[16]; x = d kvalues[nibble]
    nb = raw.shape[1] // 18
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 18
            o = b * 32
            d = f16[u16(src, s)]
            for j in range(16):
                q = src[s + 2 + j]
                dst[o + j] = d * kvalues[q & 15]
                dst[o + 16 + j] = d * kvalues[q >> 4]


@njit(parallel=True, cache=True)
def dequant_iq4_xs(out, raw, rows, f16, kvalues):  # d, u16 scales_h, scales_l[4], qs[128]; dl = d (ls - 32)
    nb = raw.shape[1] // 136
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        dst = out[i]
        for b in range(nb):
            s = b * 136
            d = f16[u16(src, s)]
            scales_h = u16(src, s + 2)
            for k in range(8):
                ls = ((np.int64(src[s + 4 + (k >> 1)]) >> (4 * (k & 1))) & 15) | (((scales_h >> (2 * k)) & 3) << 4)
                dl = d * np.float32(ls - 32)
                o = b * 256 + k * 32
                for j in range(16):
                    q = src[s + 8 + k * 16 + j]
                    dst[o + j] = dl * kvalues[q & 15]
                    dst[o + 16 + j] = dl * kvalues[q >> 4]


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
