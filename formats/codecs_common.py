"""Helpers shared by the numba block codecs: little-endian reads from a row of bytes, the fp16 -> f32 table.

numba has no float16, so an fp16 scale is looked up by its 16 bits in F16_TO_F32 (built once by numpy, so it
agrees bit for bit with numpy's own conversion, NaN payloads included).
"""
import numpy as np
from numba import njit

F16_TO_F32 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


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
