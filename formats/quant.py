"""Quantization: the shared layer around the numba row quantizers (specs.SPECS[type].quantizer).

The family modules (quant_float, quant_legacy, quant_kquants, quant_iq1, quant_iq2, quant_iq3, quant_iq4,
quant_ternary, quant_higgs) only do block work on 2-D arrays: kernel(out uint8 (rows, row_bytes), x float32
(rows, cols), qw float32 (cols,) or empty). Here the input is checked and reshaped once, and an unknown or
quantizer-less type is refused by name.

Results are byte-identical with llama.cpp's ggml_quantize_chunk (the default x86 build, no FMA contraction) for
every registered type, with and without an importance matrix (IQ1_S, IQ2_XXS and IQ2_XS only with one, as in
llama.cpp); IQ4_NL and IQ4_XS follow the same algorithm. kvant's own HIGGS types (quant_higgs) have no reference
outside kvant.
"""
from __future__ import annotations

import numpy as np

from .ggml_types import GGMLType, ggml_type
from .specs import SPECS, Imatrix, spec, types_where

QUANTIZERS: dict[str, object] = {name: s.quantizer for name, s in SPECS.items() if s.quantizer is not None}
QUANT_TYPES: tuple[str, ...] = tuple(QUANTIZERS)

# The specs' importance-matrix levels as sets of names: read when given (the others ignore it, as llama.cpp does);
# refused without one by llama-quantize (Q2_K needs one there only inside a Q2_K_S mix); unable to run without one.
USES_IMATRIX = types_where(lambda s: s.imatrix >= Imatrix.USED)
REQUIRES_IMATRIX = types_where(lambda s: s.imatrix >= Imatrix.REQUIRED)
IMATRIX_ONLY = types_where(lambda s: s.imatrix >= Imatrix.NEEDED)


class NoQuantizerError(ValueError):
    """A known ggml type that kvant cannot quantize to (yet)."""


def quantize_requires_imatrix(t) -> bool:
    """True for types that llama-quantize will not produce without an importance matrix."""
    return ggml_type(t).name in REQUIRES_IMATRIX


def quantizer(t) -> tuple[GGMLType, object]:
    gt = ggml_type(t)  # raises UnknownTypeError naming the bad value
    kernel = getattr(spec(gt), "quantizer", None)
    if kernel is None:
        raise NoQuantizerError(f"no quantizer for ggml type {gt.name}")
    return gt, kernel


_NO_IMATRIX = np.zeros(0, dtype=np.float32)


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view: one numba specialisation serves every input, memory-mapped (read-only) rows included."""
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def _importance(imatrix, x_shape: tuple, n_cols: int) -> np.ndarray:
    """The importance matrix as float32 (n_mat, cols): one row for all of x, or one per leading slice of a 3-D
    (n_mat, rows, cols) tensor (MoE experts, as llama.cpp's imatrix stores them: flat or 2-D)."""
    qw = np.ascontiguousarray(imatrix, dtype=np.float32)
    n_mat = x_shape[0] if len(x_shape) == 3 and qw.size != n_cols else 1
    if qw.size != n_mat * n_cols:
        want = f"{n_cols}" if n_mat == 1 else f"{n_mat} x {n_cols}"
        raise ValueError(f"the importance matrix has {qw.size} values, expected {want} for a tensor of shape "
                         f"{x_shape}")
    if not np.all(np.isfinite(qw)) or np.any(qw < 0):
        raise ValueError("the importance matrix must hold finite, non-negative values")
    return qw.reshape(n_mat, n_cols)


def quantize(x: np.ndarray, ggml_type, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize float rows (..., cols) to a type (GGMLType, name or id): uint8 (..., row_bytes).

    imatrix: optional importance weights, one per column (the mean of x^2 per input column that llama.cpp's
    imatrix collects), or for a 3-D (n_mat, rows, cols) tensor one row of them per slice; ignored by the types
    that do not use one (F32, F16, BF16, Q8_0, TQ1_0, TQ2_0), as in llama.cpp.
    """
    gt, kernel = quantizer(ggml_type)
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("quantize needs an array of rows, got a scalar")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"quantize needs float input, got {x.dtype}")
    n_cols = x.shape[-1]
    if n_cols % gt.block_size:
        raise ValueError(f"a row of {n_cols} elements is not a multiple of the {gt.name} block size "
                         f"{gt.block_size}")
    qw = _NO_IMATRIX.reshape(1, 0)
    if imatrix is not None and gt.name in USES_IMATRIX:
        qw = _importance(imatrix, x.shape, n_cols)
    elif gt.name in IMATRIX_ONLY:
        raise ValueError(f"{gt.name} needs an importance matrix: make one with `qconv imatrix MODEL.gguf -f TEXT`")
    x3 = _read_only(np.ascontiguousarray(x.reshape(qw.shape[0], -1, n_cols), dtype=np.float32))
    qw = _read_only(qw)
    out = np.empty(x3.shape[:2] + (gt.row_bytes(n_cols),), dtype=np.uint8)
    if out.size:
        for k in range(x3.shape[0]):
            kernel(out[k], x3[k], qw[k])
    return out.reshape(*x.shape[:-1], out.shape[-1])


def quantization_error(x: np.ndarray, raw: np.ndarray, ggml_type) -> tuple[float, float]:
    """(RMSE, max |error|) of quantized rows raw against the float rows x they came from, for reporting."""
    from .dequant import dequantize

    d = dequantize(raw, ggml_type).astype(np.float64) - np.asarray(x, dtype=np.float64).reshape(
        raw.shape[:-1] + (-1,))
    return (float(np.sqrt(np.mean(d * d))), float(np.max(np.abs(d)))) if d.size else (0.0, 0.0)
