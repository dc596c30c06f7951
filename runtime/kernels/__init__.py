"""kvant.runtime.kernels: numba kernels. prepare(raw, ggml_type) -> QMatrix with matvec / matmul.

libgomp (numba's OpenMP threading layer) by default parks idle workers after a short spin; on this class of
(virtualised) machine waking them costs 0.5-5 ms, far more than a small matvec. A long spin keeps the decode loop's
back-to-back parallel calls at a few microseconds each. It must be set before numba starts its threads, so it is
set here, at import, unless the user chose a value.
"""
import os

os.environ.setdefault("GOMP_SPINCOUNT", "10000000")

from .registry import FLOAT, KERNELS, SMALL_BATCH, QMatrix, UnsupportedTypeError, layout_for, prepare, prepare_stacked  # noqa: E402,E501
from . import floats, higgs, iquants, kquants, legacy, ternary  # noqa: E402,F401  (they register their layouts)

SUPPORTED_TYPES = tuple(dict.fromkeys(name for name, _ in KERNELS))

__all__ = ["prepare", "prepare_stacked", "layout_for", "QMatrix", "UnsupportedTypeError", "SUPPORTED_TYPES", "FLOAT",
           "KERNELS"]
