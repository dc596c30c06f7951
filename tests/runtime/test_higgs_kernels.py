"""The HIGGS types' matvec and prefill kernels (runtime/kernels/higgs.py), both kinds on every CPU that runs them,
against a numpy reference: the file's blocks decoded by numpy (test_higgs_types.numpy_decode: grid points, scale,
inverse transform), then the matrix product in float64."""
import os
import sys

import numpy as np
import pytest

from kvant.formats.quant import quantize
from kvant.runtime.kernels import higgs
from kvant.runtime.kernels.registry import LAYOUTS, QMatrix, UnsupportedTypeError, prepare

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "formats"))
from test_higgs_types import numpy_decode  # noqa: E402

NAMES = ("HG4", "HG3", "HG2")
SHAPES = [(1, 1), (3, 2), (37, 9), (70, 3)]         # (rows, 64-blocks per row)
KINDS = {"float": (higgs.FLOAT_LAYOUTS, 2e-6),
         # x rounded to int16 per block: |x| / 2^14 at most, relative to the row's sum of |w x| below
         "gather": (higgs.GATHER_LAYOUTS, 2e-4)}


def _matrix(layouts, name, raw, cols):
    layout = layouts[name]
    return QMatrix(name, (raw.shape[0], cols), tuple(layout.repack(raw, cols)), layout)


def _check(got, w, x, tol):
    want = x.astype(np.float64) @ w.T
    scale = np.abs(x.astype(np.float64)) @ np.abs(w).T      # the size of the terms summed
    assert np.all(np.abs(got - want) <= tol * scale + 1e-30)


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("name", NAMES)
def test_matvec_and_matmul_equal_the_numpy_reference(name, kind):
    if kind == "gather" and not higgs.GATHER:
        pytest.skip("vpgatherdd: x86 kernel paths only (this CPU runs the float kernels)")
    layouts, tol = KINDS[kind]
    rng = np.random.default_rng(len(name) + len(kind))
    for rows, blocks in SHAPES:
        cols = 64 * blocks
        w0 = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 1.0, (rows, 1))).astype(np.float32)
        raw = quantize(w0, name)
        w = numpy_decode(raw, name)
        qm = _matrix(layouts, name, raw, cols)
        x = rng.standard_normal(cols).astype(np.float32)
        out = np.full(rows, np.nan, np.float32)
        qm.matvec(out, x)
        _check(out[None], w, x[None], tol)
        for n in (2, 5):        # below SMALL_BATCH: matvecs; above: the float GEMM on rotated tokens
            xs = rng.standard_normal((n, cols)).astype(np.float32)
            outs = np.full((n, rows), np.nan, np.float32)
            qm.matmul(outs, xs)
            _check(outs, w, xs, tol if n < 4 else 2e-6)


def test_the_registered_layout_is_this_cpus():
    want = higgs.GATHER_LAYOUTS if higgs.GATHER else higgs.FLOAT_LAYOUTS
    assert all(LAYOUTS[name] is want[name] for name in NAMES)


def test_rows_must_be_whole_blocks():
    with pytest.raises(ValueError, match="34-byte blocks"):
        prepare(np.zeros((2, 50), np.uint8), "HG4")
    with pytest.raises(UnsupportedTypeError):
        prepare(np.zeros((2, 34), np.uint8), "HG5")
