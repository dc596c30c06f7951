"""F32 / F16 / BF16 matvec (runtime/kernels/floats.py): any row length and row count (LLVM's vector loop, its
remainder and scalar tail), exact widening of every weight (subnormal halves, signed zeros), and the same numbers
from 1 and 2 threads."""
import numba
import numpy as np
import pytest

from kvant.runtime.kernels import prepare

TYPES = ("F32", "F16", "BF16")


def raw_and_floats(name, w):
    """The file bytes of w (float32 2-D) in type name, and the float64 values they hold."""
    if name == "F16":
        h = w.astype(np.float16)
        return h.view(np.uint8), h.astype(np.float64)
    if name == "BF16":
        b = (w.view(np.uint32) >> 16).astype(np.uint16)
        return b.view(np.uint8), (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return w.view(np.uint8), w.astype(np.float64)


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 15), (17, 16), (5, 17), (2, 63), (33, 100), (64, 576),
                                       (7, 1536), (40, 4096)])
def test_matvec_any_shape(name, rows, cols):
    rng = np.random.default_rng(rows * 1000 + cols)
    raw, wf = raw_and_floats(name, rng.standard_normal((rows, cols), dtype=np.float32))
    qm = prepare(raw.reshape(rows, -1), name)
    x = rng.standard_normal(cols, dtype=np.float32)
    out = np.full(rows, np.nan, np.float32)
    qm.matvec(out, x)
    ref = wf @ x.astype(np.float64)
    bound = np.abs(wf) @ np.abs(x.astype(np.float64))       # f32 accumulation in any order: relative to sum |w x|
    assert np.all(np.abs(out - ref) <= 1e-6 * bound + 1e-30)


@pytest.mark.parametrize("name", TYPES)
def test_every_weight_widened_exactly(name):
    """A one-hot x picks one column: out must be that column's weights exactly (columns in the 64-element vector
    steps and in the remainder: 100 = 64 + 32 + 4)."""
    rng = np.random.default_rng(7)
    cols = 100
    if name == "F16":     # every class of half: subnormals, signed zeros, normals up to the largest
        bits = rng.integers(0, 0x7C00, (24, cols), dtype=np.uint16)
        bits[:, ::7] &= 0x03FF                           # subnormal
        bits[:, 1::11] = 0
        bits |= rng.integers(0, 2, bits.shape, dtype=np.uint16) << 15
        raw, wf = bits.view(np.uint8), bits.view(np.float16).astype(np.float64)
    else:
        raw, wf = raw_and_floats(name, (rng.standard_normal((24, cols)) * 10.0 ** rng.integers(-30, 30, (24, cols)))
                                 .astype(np.float32))
    qm = prepare(raw.reshape(24, -1), name)
    out = np.empty(24, np.float32)
    for j in (0, 1, 15, 16, 63, 64, 80, 95, 96, 99):
        x = np.zeros(cols, np.float32)
        x[j] = 1.0
        qm.matvec(out, x)
        np.testing.assert_array_equal(out, wf[:, j].astype(np.float32))


@pytest.mark.parametrize("name", TYPES)
def test_threads_give_the_same_numbers(name):
    """Each row is summed by one thread in a fixed order, so the thread count does not change a bit."""
    rng = np.random.default_rng(3)
    raw, _ = raw_and_floats(name, rng.standard_normal((301, 592), dtype=np.float32))
    qm = prepare(raw.reshape(301, -1), name)
    x = rng.standard_normal(592, dtype=np.float32)
    outs = []
    before = numba.get_num_threads()
    try:
        for t in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(t)
            out = np.empty(301, np.float32)
            qm.matvec(out, x)
            outs.append(out)
    finally:
        numba.set_num_threads(before)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
