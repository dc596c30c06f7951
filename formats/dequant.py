"""Dequantization: the shared layer around the numba codecs (specs.SPECS[type].codec: kernel, tables).

The codecs (codecs_float, codecs_legacy, codecs_kquants, codecs_iq, codecs_ternary, codecs_higgs) only do block
work on 2-D arrays; here the input is checked and reshaped once, and an unknown or codec-less type is refused by name.
All results are bit-exact with gguf.quants.dequantize (kvant's own HIGGS types: with quant_higgs.dequantize).
"""
from __future__ import annotations

import numpy as np

from .ggml_types import GGMLType, ggml_type
from .specs import SPECS, spec

DEQUANT_TYPES: tuple[str, ...] = tuple(name for name, s in SPECS.items() if s.codec is not None)


class NoCodecError(ValueError):
    """A known ggml type that kvant cannot dequantize (Q8_1, Q8_K, the integer types...)."""


def _codec(t) -> tuple[GGMLType, tuple]:
    gt = ggml_type(t)  # raises UnknownTypeError naming the bad value
    codec = getattr(spec(gt), "codec", None)
    if codec is None:
        raise NoCodecError(f"no dequantizer for ggml type {gt.name}")
    return gt, codec


def _as_rows(raw: np.ndarray, gt: GGMLType) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raw = raw.view(np.uint8)
    if raw.ndim == 0 or raw.shape[-1] % gt.type_size:
        raise ValueError(f"{gt.name} rows must be whole blocks of {gt.type_size} bytes, got an array of shape "
                         f"{raw.shape}")
    raw = np.ascontiguousarray(raw.reshape(-1, raw.shape[-1]))
    if raw.flags.writeable:  # one numba specialisation for every input: the mmap's rows are read-only
        raw = raw.view()
        raw.flags.writeable = False
    return raw


def _run(raw2d: np.ndarray, gt: GGMLType, codec: tuple, rows: np.ndarray) -> np.ndarray:
    kernel, tables = codec
    n_cols = raw2d.shape[1] // gt.type_size * gt.block_size
    out = np.empty((rows.shape[0], n_cols), dtype=np.float32)
    if out.size:
        kernel(out, raw2d, rows, *tables)
    return out


def dequantize(raw: np.ndarray, ggml_type) -> np.ndarray:
    """Decode raw bytes (..., row_bytes) of a type (GGMLType, name or id) to float32 (..., cols)."""
    gt, codec = _codec(ggml_type)
    raw2d = _as_rows(raw, gt)
    out = _run(raw2d, gt, codec, np.arange(raw2d.shape[0], dtype=np.int64))
    shape = np.shape(raw)
    return out.reshape(*shape[:-1], out.shape[1])


class RowReader:
    """Rows of one 2-D raw tensor (rows, row_bytes) decoded on demand, e.g. an embedding lookup: the type, shape and
    layout checks of dequantize_rows done once, so a one-token lookup costs little more than its kernel call (they
    took 80 us a decoded token)."""

    def __init__(self, raw: np.ndarray, ggml_type):
        self.gt, self._codec = _codec(ggml_type)
        raw = np.asarray(raw)
        if raw.ndim != 2:
            raise ValueError(f"a row reader needs a 2-D (rows, row_bytes) array, got shape {raw.shape}")
        self.raw = _as_rows(raw, self.gt)
        self.n_rows = self.raw.shape[0]

    def __call__(self, rows) -> np.ndarray:
        """float32 (len(rows), cols). Negative indices count from the end, as in numpy."""
        idx = np.asarray(rows).reshape(-1)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"row indices must be integers, got {idx.dtype}")
        idx = idx.astype(np.int64)
        n = self.n_rows
        bad = (idx < -n) | (idx >= n)
        if bad.any():
            raise IndexError(f"row {int(idx[bad][0])} out of range for a tensor of {n} rows")
        return _run(self.raw, self.gt, self._codec, np.where(idx < 0, idx + n, idx))


def dequantize_rows(raw: np.ndarray, ggml_type, rows) -> np.ndarray:
    """Decode only the given rows (e.g. token ids for an embedding lookup) of a 2-D raw tensor: float32
    (len(rows), cols). Negative indices count from the end, as in numpy."""
    return RowReader(raw, ggml_type)(rows)
