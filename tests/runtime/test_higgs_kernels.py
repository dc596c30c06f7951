"""The HIGGS types' matvec and prefill kernels (runtime/kernels/higgs.py), both kinds on every CPU that runs them,
against a numpy reference: the file's blocks decoded by numpy (test_higgs_types.numpy_decode: grid points, scale,
inverse transform), then the matrix product in float64."""
import os
import sys

import numpy as np
import pytest

from kvant.formats import higgs_types
from kvant.formats.host import host_features
from kvant.formats.quant import quantize
from kvant.runtime.kernels import _gemm, higgs
from kvant.runtime.kernels.registry import FLOAT, KERNELS, QMatrix, UnsupportedTypeError, layout_for, prepare

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "formats"))
from test_higgs_types import _sylvester, numpy_decode  # noqa: E402

NAMES = ("HG4", "HG3", "HG2")
SHAPES = [(1, 1), (3, 2), (37, 9), (70, 3)]         # (rows, 64-blocks per row): odd block counts end a step early


def _lookup_x(x):
    """The rotated x as the lookup kernel multiplies it (x_int8_steps: int8 per block), back in float64 and in
    value order; checks on the way that it is within half a step of the rotated x and that corr is -128 times its
    lane sums."""
    cols = x.shape[0]
    xr, xs, xl, corr = higgs._lookup_scratch(cols)
    higgs.rotate(xr, x)
    higgs.x_int8_steps(xs, xl, corr, xr)
    b = np.arange(cols // 64)
    first = (b // 2) * 128 + (b % 2) * 32                       # per block: its 32 first-coordinate bytes
    codes = first[:, None] + np.arange(32)
    pairs = np.stack([xs[codes], xs[codes + 64]], -1).astype(np.float64)      # (blocks, 32, 2)
    lanes = (b // 2) * 16 + (b % 2) * 8
    scale = xl[lanes].astype(np.float64)
    assert np.all(np.abs(pairs) <= 127)
    lane_sums = pairs.reshape(-1, 8, 8).sum(-1)                  # a lane: 4 codes, both coordinates
    assert np.array_equal(corr[lanes[:, None] + np.arange(8)], -128 * lane_sums)
    got = (pairs * scale[:, None, None]).reshape(cols)
    assert np.all(np.abs(got - xr) <= 0.5 * np.repeat(scale, 64) * (1 + 1e-6) + 1e-30)
    return got


def _rotated(w):
    return (w.reshape(w.shape[0], -1, 64) @ _sylvester(64)).reshape(w.shape)


# kind: (layouts, can this CPU run it, why not, tolerance, the x and weights the kernel multiplies exactly)
KINDS = {"float": (higgs.FLOAT_LAYOUTS, True, "", 2e-6, lambda w, x: (w, x)),
         # both integer kinds multiply the rotated x in int8: compared with exactly that x, in the rotated basis; the
         # grids from vpshufb tables (HG4: its symmetric half) or vpermi2b ones
         "shuffle": (higgs.SHUFFLE_LAYOUTS, higgs.PSHUFB, "vpshufb on ymm: x86 kernel paths only", 2e-6,
                     lambda w, x: (_rotated(w), _lookup_x(x))),
         "lookup": (higgs.LOOKUP_LAYOUTS, higgs.LOOKUP, "vpermi2b: the avx512vnni path on a CPU with AVX-512 VBMI",
                    2e-6, lambda w, x: (_rotated(w), _lookup_x(x)))}


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
    layouts, runs_here, why_not, tol, multiplied = KINDS[kind]
    if not runs_here:
        pytest.skip(why_not + f" (this CPU runs the {higgs.CPU_PATH} path)")
    if name not in layouts:
        pytest.skip(f"the {kind} kernels run {', '.join(layouts)} only")
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
        _check(out[None], *_pair(multiplied, w, x[None]), tol)
        for n in (2, 5):        # below SMALL_BATCH: matvecs; above: the float GEMM on rotated tokens
            xs = rng.standard_normal((n, cols)).astype(np.float32)
            outs = np.full((n, rows), np.nan, np.float32)
            qm.matmul(outs, xs)
            if n < 4:
                _check(outs, *_pair(multiplied, w, xs), tol)
            else:
                _check(outs, w, xs, 2e-6)


@pytest.mark.parametrize("kind", ["lookup", "shuffle"])
@pytest.mark.parametrize("name", NAMES)
def test_integer_prefill_equals_the_numpy_reference(name, kind):
    """Each integer layout's GEMM: rows decoded to q + 128 bytes in tiles of 16 (rows past a tile's end masked) by its
    own lookups, times the rotated tokens' Q8_0 codes, exact in int32: equal to those codes times the rotated
    weights."""
    layouts, runs_here, why_not = KINDS[kind][:3]
    if not runs_here:
        pytest.skip(why_not + f" (this CPU runs the {higgs.CPU_PATH} path)")
    rng = np.random.default_rng(len(name))
    for rows, blocks in SHAPES + [(16, 4)]:
        cols = 64 * blocks
        raw = quantize((rng.standard_normal((rows, cols)) * 0.1).astype(np.float32), name)
        qm = _matrix(layouts, name, raw, cols)
        assert qm.gemm[0] == higgs.ROTATED_Q8_0
        for n in (6, 7, 9):     # whole groups of tokens and the leftovers
            xs = rng.standard_normal((n, cols)).astype(np.float32)
            xq, xd, _, _ = _gemm.quantize(xs, higgs.ROTATED_Q8_0)
            multiplied = xq.astype(np.float64) * np.repeat(xd, 32, axis=1)
            assert np.all(np.abs(multiplied - (xs.reshape(n, -1, 64) @ _sylvester(64)).reshape(n, cols))
                          <= np.repeat(xd, 32, axis=1) * 0.6)   # half a code, and the scale's fp16 rounding (x 127)
            out = np.full((n, rows), np.nan, np.float32)
            _gemm.int_matmul(qm, out, xs)
            _check(out, _rotated(numpy_decode(raw, name)), multiplied, 2e-6)


@pytest.mark.parametrize("name", NAMES)
def test_register_tables_hold_the_int8_grid(name):
    """The lookup path's byte tables (q + 128, padded with q = 0) and the vpshufb path's (int8 q in both lanes of each
    16-entry part): checked on every CPU, since only one of them runs on a given one."""
    q = higgs_types.grid_codes(name)
    points, held = len(q), min(len(q), 128)     # of the 256-point grid, the half whose negation is the other
    lookup = higgs._byte_tables(name).reshape(2, -1).astype(np.int64) - 128
    assert np.array_equal(lookup[:, :held], q[:held].T) and not lookup[:, held:].any()
    parts = higgs._shuffle_tables(name).view(np.int8).reshape(2, held // 16, 32)
    assert np.array_equal(parts[:, :, :16].reshape(2, held), q[:held].T)
    assert np.array_equal(parts[:, :, 16:], parts[:, :, :16])


def test_the_half_table_and_its_negation_give_every_hg4_point():
    """The two kernels' rules for the 256-point grid, in numpy on every CPU, for all 256 codes and both
    coordinates: _lookup512's (the byte at code c & 127 of the half table, negated mod 256 where c's top bit is set,
    is q + 128 of point c) and the vpshufb kernel's (part (c >> 4) & 7, entry c & 15, then vpsignb by c | 1)."""
    q = higgs_types.grid_codes("HG4")
    tables = higgs._byte_tables("HG4").reshape(2, -1).astype(np.int64)
    codes = np.arange(256)
    looked = tables[:, codes & 127]
    assert np.array_equal(np.where(codes >= 128, (256 - looked) & 255, looked) - 128, q.T)
    parts = higgs._shuffle_tables("HG4").view(np.int8).reshape(2, 8, 32).astype(np.int64)
    idx = codes & 0x7F              # vpshufb gives 0 where its index's bit 7 is set: the kernel clears it first
    shuffled = np.where(idx & 0x80, 0, parts[:, (idx >> 4) & 7, idx & 15])
    negate = (codes | 1).astype(np.uint8).view(np.int8) < 0
    assert np.array_equal(np.where(negate, -shuffled, shuffled), q.T)


def _pair(multiplied, w, xs):
    """The weights and the tokens' x as the kernel multiplies them (one pair of weights for all tokens)."""
    pairs = [multiplied(w, x) for x in xs]
    return pairs[0][0], np.stack([x for _, x in pairs])


def test_the_registered_layout_is_this_cpus():
    want = higgs.LOOKUP_LAYOUTS if higgs.LOOKUP else higgs.SHUFFLE_LAYOUTS if higgs.PSHUFB else higgs.FLOAT_LAYOUTS
    assert all(layout_for(name) is want[name] and KERNELS[(name, FLOAT)] is higgs.FLOAT_LAYOUTS[name]
               for name in NAMES)
    assert higgs.LOOKUP == (higgs.CPU_PATH == "avx512vnni" and "avx512vbmi" in host_features())


def test_rows_must_be_whole_blocks():
    with pytest.raises(ValueError, match="34-byte blocks"):
        prepare(np.zeros((2, 50), np.uint8), "HG4")
    with pytest.raises(UnsupportedTypeError):
        prepare(np.zeros((2, 34), np.uint8), "HG5")


@pytest.mark.parametrize("name", NAMES)
def test_the_packed_repacks_keep_every_code_on_any_cpu(name):
    """The lookup and vpshufb layouts' repacks (plain numba, run on every CPU) against the file's codes: code_of reads
    each code back from the lookup layout, and the vpshufb layout's rows decode to the float layout's."""
    from kvant.formats.higgs_types import HIGGS_TYPES, code_at
    from kvant.runtime.kernels._lookup512 import code_of
    _, points, type_size = HIGGS_TYPES[name]
    rng = np.random.default_rng(7)
    for blocks in (1, 2, 3, 9):
        cols = 64 * blocks
        raw = quantize(rng.standard_normal((3, cols)).astype(np.float32), name)
        c, d, _, _, _, offsets = higgs.LOOKUP_LAYOUTS[name].repack(raw, cols)
        for r in range(3):
            got = [code_of(c[r], t, points, offsets) for t in range(32 * blocks)]
            want = [code_at(raw[r], (t // 32) * type_size + 2, t % 32, points) for t in range(32 * blocks)]
            assert got == want
        floats = higgs.FLOAT_LAYOUTS[name].repack(raw, cols)
        c, d, _, g0, g1 = higgs.SHUFFLE_LAYOUTS[name].repack(raw, cols)
        for r in range(3):
            want, got = np.empty(cols, np.float32), np.empty(cols, np.float32)
            higgs._dec_float(want, r, *floats)
            higgs._dec_float(got, r, c, d, g0, g1)
            assert np.allclose(got, want, rtol=1e-6, atol=0)
