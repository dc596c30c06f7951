"""Float types: F32 (a bit copy), F16 (ggml's software GGML_FP32_TO_FP16: round to nearest even, NaN -> quiet
0x7E00 with its sign) and BF16 (ggml_fp32_to_bf16_row_ref: round to nearest even, NaN forced quiet)."""
from numba import njit, prange

from .quant_common import f32_bits, fp32_to_fp16, put_u16, put_u32


@njit(parallel=True, cache=True, error_model="numpy")
def quant_f32(out, x, qw):
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            put_u32(out[r], 4 * j, f32_bits(x[r, j]))


@njit(parallel=True, cache=True, error_model="numpy")
def quant_f16(out, x, qw):
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            put_u16(out[r], 2 * j, fp32_to_fp16(x[r, j]))


@njit(cache=True, error_model="numpy")
def fp32_to_bf16(f):
    u = f32_bits(f)
    if (u & 0x7FFFFFFF) > 0x7F800000:  # NaN: keep the top bits, force quiet
        return (u >> 16) | 64
    return ((u + (0x7FFF + ((u >> 16) & 1))) >> 16) & 0xFFFF


@njit(parallel=True, cache=True, error_model="numpy")
def quant_bf16(out, x, qw):
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            put_u16(out[r], 2 * j, fp32_to_bf16(x[r, j]))


QUANTIZERS = {
    "F32": quant_f32,
    "F16": quant_f16,
    "BF16": quant_bf16,
}
