"""prepare(raw, ggml_type) -> QMatrix: the one entry point, and the table of kernels each type family registers.

KERNELS maps (type name, kernel path) to a Layout. Every type registers its float kernels under FLOAT (every CPU
runs them; the tests run them on every path) and, where the CPU has an integer path (_isa.CPU_PATH, fixed at import
because the integer kernels' IR is built for it), its integer kernels under that path. prepare() picks the path's
entry, or the float one where a type has no integer kernels or the caller asks for FLOAT."""
from dataclasses import dataclass
from typing import Callable

import numpy as np
from kvant.formats.ggml_types import ggml_type as lookup_type
from kvant.formats.specs import spec

from ._common import zeros_on_lines
from ._isa import CPU_PATH, INT_KERNELS


SMALL_BATCH = 4   # matmul with fewer tokens runs as that many matvecs


class UnsupportedTypeError(ValueError):
    """A ggml type that has no kernel yet."""


@dataclass(frozen=True)
class Layout:
    """How one ggml type is repacked and multiplied.

    repack(raw, cols) -> tuple of arrays (the QMatrix's storage; views into raw where no repack is needed);
    scratch(cols) -> tuple of per-call activation buffers; matvec(out, x, *arrays, *scratch) and
    matmul(out, x, *arrays) are numba kernels. matvec_rounds_x: the activation rounding (actquant) the matvec
    applies to x itself (integer dot products), or None when it multiplies x as given. gemm: run(out, codes,
    *arrays), the integer prefill GEMM (_gemm.py) on x quantized by the type's activation scheme (formats/specs),
    or None; gemm_scheme: that GEMM's activation scheme where it is not the type's own (kernels/higgs.py)."""
    block: int
    repack: Callable
    scratch: Callable
    matvec: Callable
    matmul: Callable
    note: str
    matvec_rounds_x: Callable | None = None
    gemm: Callable | None = None
    gemm_scheme: str | None = None


FLOAT = "float"
KERNELS: dict[tuple[str, str], Layout] = {}


def register(name: str, float_layout: Layout, int_layout: Layout | None = None) -> None:
    """A type's float kernels, and its integer kernels for the path in force (kept only where there is one)."""
    KERNELS[(name, FLOAT)] = float_layout
    if int_layout is not None and INT_KERNELS:
        KERNELS[(name, CPU_PATH)] = int_layout


def kernels_for(name: str, path: str = CPU_PATH) -> tuple[str, Layout] | None:
    """(the path whose kernels a matrix of type name runs on path, their Layout): path's own, else the float ones;
    None where the type has none. path: FLOAT or the path in force (KVANT_CPU_PATH chooses another at start: the
    integer kernels are built for one path a process)."""
    if path not in (FLOAT, CPU_PATH):
        raise ValueError(f"kernel path {path!r}: this process runs {CPU_PATH!r} or {FLOAT!r} "
                         f"(set KVANT_CPU_PATH before starting it for another)")
    for used in (path, FLOAT):
        layout = KERNELS.get((name, used))
        if layout is not None:
            return used, layout
    return None


def layout_for(name: str, path: str = CPU_PATH) -> Layout | None:
    """The kernels a matrix of type name runs on path (kernels_for's Layout)."""
    found = kernels_for(name, path)
    return None if found is None else found[1]


class QMatrix:
    """A weight matrix ready for the kernels: shape (rows, cols) in numpy order.

    matvec(out f32[rows], x f32[cols]) and matmul(out f32[n, rows], x f32[n, cols]) are parallel over rows with
    numba's thread count. Both write into out, allocate nothing per call (matmul: one float tile per thread) and
    keep per-matrix activation scratch, so one QMatrix must not be used from two Python threads at once."""

    __slots__ = ("type_name", "shape", "nbytes", "arrays", "layout", "path", "kernel", "kernel_args", "gemm", "_mm")

    @property
    def kernel_key(self):
        """"type@path": which KERNELS entry this matrix's arrays are for (the fused decode step's kernel choice)."""
        return f"{self.type_name}@{self.path}"

    def __init__(self, type_name, shape, arrays, layout, path=FLOAT):
        self.type_name = type_name
        self.shape = shape
        self.arrays = arrays
        self.layout = layout
        self.path = path
        self.nbytes = int(sum(a.nbytes for a in arrays))
        # matvec is kernel(out, x, *kernel_args): a numba function, callable from the caller's own jitted code
        self.kernel = layout.matvec
        self.kernel_args = tuple(arrays) + tuple(layout.scratch(shape[1]))
        self._mm = layout.matmul
        # the integer prefill GEMM as (activation scheme, run(out, codes, *arrays)), or None
        self.gemm = None if layout.gemm is None else (layout.gemm_scheme or spec(type_name).activation,
                                                       layout.gemm)

    def matvec(self, out, x):
        """out[rows] = W @ x. Both float32, C-contiguous (the kernels index without bounds checks)."""
        if x.shape[0] != self.shape[1] or out.shape[0] != self.shape[0]:
            raise ValueError(f"matvec {self.shape}: x {x.shape}, out {out.shape}")
        self.kernel(out, x, *self.kernel_args)

    def matmul(self, out, x):
        """out[n, rows] = x[n, cols] @ W.T."""
        if x.ndim != 2 or x.shape[1] != self.shape[1] or out.shape != (x.shape[0], self.shape[0]):
            raise ValueError(f"matmul {self.shape}: x {x.shape}, out {out.shape}")
        if x.shape[0] < SMALL_BATCH:    # decoding a row to floats costs about one fused matvec of it
            for i in range(x.shape[0]):
                self.kernel(out[i], x[i], *self.kernel_args)
            return
        self._mm(out, x, *self.arrays)

    def __repr__(self):
        return f"QMatrix({self.type_name}, shape={self.shape}, nbytes={self.nbytes})"


def prepare_stacked(raws, ggml_type) -> QMatrix:
    """One QMatrix for several matrices of one type and row length stacked by rows (q/k/v, gate/up): one kernel
    call instead of several, which matters for small matrices (a parallel call costs a few microseconds). The
    quantized rows are copied together first (no float copy), into memory starting on a cache line (float types
    are multiplied from these bytes as they are: 8% faster in cache than 16 bytes off a line)."""
    raws = [np.asarray(r) for r in raws]
    if len(raws) == 1 or raws[0].ndim != 2 or any(r.dtype != raws[0].dtype for r in raws):
        # prepare (or numpy's concatenate) says what is wrong with a bad one
        return prepare(raws[0] if len(raws) == 1 else np.concatenate(raws, axis=0), ggml_type)
    stacked = zeros_on_lines((sum(r.shape[0] for r in raws), raws[0].shape[1]), raws[0].dtype)
    return prepare(np.concatenate(raws, axis=0, out=stacked), ggml_type)


def prepare(raw, ggml_type, path: str = CPU_PATH) -> QMatrix:
    """raw: uint8 (rows, row_bytes) view of a tensor in a GGUF file; ggml_type: a name or an object with .name;
    path: the kernel path (FLOAT: the float kernels on any CPU)."""
    name = str(getattr(ggml_type, "name", ggml_type)).upper()
    found = kernels_for(name, path)
    if found is None:
        raise UnsupportedTypeError(f"type {name} not supported yet")
    path, layout = found
    raw = np.asarray(raw)
    if raw.dtype != np.uint8 or raw.ndim != 2:
        raise ValueError(f"prepare wants a 2-D uint8 array, got {raw.dtype} with shape {raw.shape}")
    rows, row_bytes = raw.shape
    gt = lookup_type(name)
    blk, tsize = gt.block_size, gt.type_size
    if row_bytes % tsize:
        raise ValueError(f"{name}: row of {row_bytes} bytes is not a whole number of {tsize}-byte blocks")
    cols = row_bytes // tsize * blk
    if cols % layout.block:
        raise ValueError(f"{name}: kernels need rows of a multiple of {layout.block} elements, got {cols}")
    if not raw.flags.c_contiguous:
        raw = np.ascontiguousarray(raw)
    arrays = tuple(layout.repack(raw, cols))
    return QMatrix(name, (rows, cols), arrays, layout, path)
