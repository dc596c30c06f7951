"""llama.cpp's own quantizer (ggml_quantize_chunk from llama-cpp-python's libggml-base), the oracle for
kvant.formats.quant. Needs llama-cpp-python; used by make_quant_fixtures.py and by the dev comparisons, never by
the fast tests (they read the stored fixtures)."""
import ctypes
import os

import gguf
import numpy as np

_LIB = None


def _lib():
    global _LIB
    if _LIB is None:
        import llama_cpp

        lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so"))
        lib.ggml_quantize_init.argtypes = [ctypes.c_int]
        lib.ggml_quantize_init.restype = None
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        _LIB = lib
    return _LIB


def llamacpp_quantize(x: np.ndarray, type_name: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """Quantize float32 rows (rows, cols) with llama.cpp; returns uint8 (rows, row_bytes)."""
    lib = _lib()
    qt = gguf.GGMLQuantizationType[type_name]
    block, type_size = gguf.GGML_QUANT_SIZES[qt]
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, cols = x.shape
    out = np.zeros((rows, cols // block * type_size), dtype=np.uint8)
    qw = None
    if imatrix is not None:
        qw = np.ascontiguousarray(imatrix, dtype=np.float32)
        assert qw.shape == (cols,)
    lib.ggml_quantize_init(int(qt))
    n = lib.ggml_quantize_chunk(int(qt), x.ctypes.data, out.ctypes.data, 0, rows, cols,
                                None if qw is None else qw.ctypes.data)
    assert n == out.size, (n, out.size)
    return out
