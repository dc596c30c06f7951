"""Float formats: F32, F16, BF16 (bit copies), MXFP4 (e2m1 values sharing an E8M0 exponent per 32) and NVFP4
(e2m1 values with a UE4M3 scale per 16).

Every kernel here and in the other codecs_* modules has the same signature: kernel(out, raw, rows, *tables) with
out float32 (n, cols), raw uint8 (R, row_bytes), rows int64 (n,): out[i] = the decoded row raw[rows[i]].
"""
import numpy as np
from gguf import quants as gq
from numba import njit, prange

from .blocks import block
from .codecs_common import F16_TO_F32, decode_blocks, u16, u32

MXFP4, NVFP4 = block("MXFP4"), block("NVFP4")

# ggml_e8m0_to_fp32_half: 2**(e-127) / 2 as float32 bits; e < 2 lands in the subnormals.
_E = np.arange(256, dtype=np.uint32)
E8M0_HALF = np.where(_E < 2, np.uint32(0x00200000) << _E, (_E - 1) << np.uint32(23)).astype(np.uint32).view(np.float32)
KVALUES_MXFP4 = np.array(gq.MXFP4.kvalues, dtype=np.float32)  # e2m1 values, doubled (NVFP4 uses the same)
UE4M3_HALF = gq.NVFP4.ue4m3_to_fp32(np.arange(256, dtype=np.uint8)).astype(np.float32)  # scale / 2, as gguf decodes it


@njit(parallel=True, cache=True)
def dequant_f32(out, raw, rows):
    bits = out.view(np.uint32)
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        for j in range(out.shape[1]):
            bits[i, j] = u32(src, 4 * j)


@njit(parallel=True, cache=True)
def dequant_f16(out, raw, rows, f16):
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        for j in range(out.shape[1]):
            out[i, j] = f16[u16(src, 2 * j)]


@njit(parallel=True, cache=True)
def dequant_bf16(out, raw, rows):
    bits = out.view(np.uint32)
    for i in prange(rows.shape[0]):
        src = raw[rows[i]]
        for j in range(out.shape[1]):
            bits[i, j] = u16(src, 2 * j) << 16


@njit(cache=True, inline="always")
def _mxfp4(dst, o, src, s, tables):  # e[1] (E8M0), qs[16]
    e8m0_half, kvalues = tables
    d = e8m0_half[src[s + MXFP4.e]]
    for j in range(16):
        q = src[s + MXFP4.qs + j]
        dst[o + j] = d * kvalues[q & 15]
        dst[o + 16 + j] = d * kvalues[q >> 4]


@njit(cache=True, inline="always")
def _nvfp4(dst, o, src, s, tables):  # d[4] (UE4M3, one per 16), qs[32]
    ue4m3_half, kvalues = tables
    for g in range(4):  # sub-block g: low nibbles of qs[8g:8g+8], then the high nibbles
        d = ue4m3_half[src[s + NVFP4.d + g]]
        og = o + g * 16
        for j in range(8):
            q = src[s + NVFP4.qs + g * 8 + j]
            dst[og + j] = d * kvalues[q & 15]
            dst[og + 8 + j] = d * kvalues[q >> 4]


@njit(parallel=True, cache=True)
def dequant_mxfp4(out, raw, rows, e8m0_half, kvalues):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], MXFP4.size, 32, _mxfp4, (e8m0_half, kvalues))


@njit(parallel=True, cache=True)
def dequant_nvfp4(out, raw, rows, ue4m3_half, kvalues):
    for i in prange(rows.shape[0]):
        decode_blocks(out[i], raw[rows[i]], NVFP4.size, 64, _nvfp4, (ue4m3_half, kvalues))


CODECS = {
    "F32": (dequant_f32, ()),
    "F16": (dequant_f16, (F16_TO_F32,)),
    "BF16": (dequant_bf16, ()),
    "MXFP4": (dequant_mxfp4, (E8M0_HALF, KVALUES_MXFP4)),
    "NVFP4": (dequant_nvfp4, (UE4M3_HALF, KVALUES_MXFP4)),
}
