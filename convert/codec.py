"""The converter's one door to the number formats: float rows in, the bytes of a ggml type out, and back.

Quantization goes to kvant.formats.quant (numba, byte-identical with llama.cpp). Should that module be missing or
lack a type, the gguf package's numpy reference quantizer is used for the types it knows (F32, F16, BF16, Q4_0,
Q4_1, Q5_0, Q5_1, Q8_0, TQ1_0, TQ2_0; byte-identical with libggml too, only slower). Anything else is refused by name.
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

from kvant.formats.ggml_types import GGMLType, ggml_type


class CannotQuantizeError(ValueError):
    """A ggml type kvant has no quantizer for."""


def _formats_quant():
    try:
        from kvant.formats import quant
    except ImportError:
        return None
    return quant


# What the gguf package's numpy quantizer can produce (its quantize_blocks is implemented for these).
GGUF_QUANTIZABLE = frozenset({"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0"})


def can_quantize(t) -> bool:
    gt = ggml_type(t)
    quant = _formats_quant()
    return gt.name in GGUF_QUANTIZABLE or (quant is not None and gt.name in getattr(quant, "QUANTIZERS", {}))


def quantize(x: np.ndarray, t: GGMLType | str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """float32 rows (rows, cols) -> uint8 (rows, row_bytes) of type t (F32 gives the float bytes as they are)."""
    gt = ggml_type(t)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if gt.name == "F32":
        return x.view(np.uint8).reshape(*x.shape[:-1], -1)
    if gt.name == "F16":
        return x.astype(np.float16).view(np.uint8).reshape(*x.shape[:-1], -1)
    quant = _formats_quant()
    if quant is not None and gt.name in getattr(quant, "QUANTIZERS", {}):
        return quant.quantize(x, gt, imatrix=imatrix)
    if imatrix is not None and gt.name not in ("BF16", "Q8_0", "TQ1_0", "TQ2_0"):
        raise CannotQuantizeError(f"importance-weighted {gt.name} needs kvant.formats.quant, which is not available")
    if gt.name not in GGUF_QUANTIZABLE:
        raise CannotQuantizeError(f"kvant cannot quantize to {gt.name} yet")
    return gguf_quants.quantize(x, GGMLQuantizationType(gt.id))


def dequantize(raw: np.ndarray, t: GGMLType | str, shape) -> np.ndarray:
    """The stored bytes (rows, row_bytes) of type t as float32 of the given numpy shape."""
    gt = ggml_type(t)
    if gt.name == "F32":
        return np.ascontiguousarray(raw).view(np.float32).reshape(shape)
    from kvant.formats.dequant import dequantize as deq
    return deq(np.ascontiguousarray(raw).reshape(-1, raw.shape[-1]), gt).reshape(shape)
