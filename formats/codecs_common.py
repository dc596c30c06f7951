"""Helpers shared by the numba block codecs: the block loop of a row, little-endian reads from a row of bytes, the
fp16 -> f32 table.

numba has no float16, so an fp16 scale is looked up by its 16 bits in F16_TO_F32 (built once by numpy, so it
agrees bit for bit with numpy's own conversion, NaN payloads included).
"""
import numpy as np
from numba import njit

def _all_f16_as_f32():
    with np.errstate(invalid="ignore"):         # the NaN codes (numpy on AArch64 warns while casting them)
        return np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


F16_TO_F32 = _all_f16_as_f32()


@njit(cache=True, inline="always")
def u16(src, p):
    return np.int64(src[p]) | (np.int64(src[p + 1]) << 8)


@njit(cache=True, inline="always")
def u32(src, p):
    return u16(src, p) | (u16(src, p + 2) << 16)


@njit(cache=True, inline="always")
def i8(b):
    v = np.int64(b)
    return v - ((v & 128) << 1)


@njit(cache=True, inline="always")
def sign_bit(bits, j):
    """+1 or -1 (float32) from bit j of bits: set means negative."""
    return np.float32(-1.0) if (bits >> j) & 1 else np.float32(1.0)


@njit(cache=True, inline="always")
def decode_blocks(dst, src, type_size, block_len, decode_block, tables):
    """Decode one row block by block: decode_block(dst, o, src, s, tables) writes the block_len values at dst[o:]
    from the type_size bytes at src[s:]. Kernels call it inside their own prange (numba parallelises only a prange
    written in the jitted function itself, not one inlined into it)."""
    for b in range(src.shape[0] // type_size):
        decode_block(dst, b * block_len, src, b * type_size, tables)

