"""Shared parts of the integer matvec kernels (_vnni.py; the dot-product step per CPU in _isa.py): activations
quantized as llama.cpp quantizes them (Q8_0, or Q8_K with its per-256 scale repeated per 32), int8 block dot products
summed exactly.
"""
import numpy as np
from gguf.quants import IQ4_NL
from numba import njit

from ._common import F32, copy_into

IQ4_VALUES = np.array(IQ4_NL.kvalues, np.int64)


@njit(cache=True)
def code_sums(bs, xq, scale=1):
    """bs[g] = scale * the exact sum of group g's codes (groups of len(xq) / len(bs): Q8_K's bsums per 16, as
    int32; scale -offset gives the integer sums' offset term per block)."""
    n = xq.shape[0] // bs.shape[0]
    for g in range(bs.shape[0]):
        t = 0
        for j in range(n * g, n * g + n):
            t += np.int64(xq[j])
        bs[g] = scale * t


@njit(cache=True)
def k4_x_order(dst, xq):
    """xq as q5k_row_dot reads it: per 128 elements (32-blocks A B C D), blocks A C B D."""
    for p in range(xq.shape[0] // 128):
        o = 128 * p
        copy_into(dst[o:o + 32], xq[o:o + 32])
        copy_into(dst[o + 32:o + 64], xq[o + 64:o + 96])
        copy_into(dst[o + 64:o + 96], xq[o + 32:o + 64])
        copy_into(dst[o + 96:o + 128], xq[o + 96:o + 128])


def k4_scratch(cols):
    """Scratch of the Q4_K / Q5_K integer kernels: Q8_K codes in k4_x_order, scale per 32, int32 code sums per 32,
    the codes in element order."""
    return (np.empty(cols, np.int8), np.empty(cols // 32, np.float32), np.empty(cols // 32, np.int32),
            np.empty(cols, np.int8))


def k16_scratch(cols):
    """Scratch of the K-quant integer kernels: Q8_K codes in element order, scale per 32, int32 code sums per 16."""
    return np.empty(cols, np.int8), np.empty(cols // 32, np.float32), np.empty(cols // 16, np.int32)


def int_note(rounding):
    """The end of an integer layout's note: what its dot products multiply."""
    return f", int8 x {rounding.__name__.upper()} activations"
