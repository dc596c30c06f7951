"""Quantizers: byte-identical with llama.cpp's ggml_quantize_chunk (stored fixtures, see make_quant_fixtures.py) for
every registered type with and without an importance matrix, round trips through the dequantizer, IQ4 error no
worse than llama.cpp's, hand-built blocks, and the shared layer's checks."""
import os

import gguf
import numpy as np
import pytest

from kvant.formats.ggml_types import UnknownTypeError, ggml_type
from kvant.formats.higgs_types import is_higgs
from kvant.formats.quant import (IMATRIX_ONLY, QUANT_TYPES, NoQuantizerError, USES_IMATRIX, quantization_error,
                                 quantize, quantize_requires_imatrix)

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "quant")
INPUTS = np.load(os.path.join(FIXTURES, "inputs.npz"))
SETS = ("r256", "r512", "r2816")
# F32 is a bit copy, tested by hand below; kvant's own HIGGS types have no llama.cpp fixture (test_higgs_types.py)
FIXTURE_TYPES = tuple(t for t in QUANT_TYPES if t != "F32" and not is_higgs(t))

# Round-trip RMSE bound per type on standard-normal rows (measured values are about 20-30% lower).
RMSE_BOUND = {
    "F16": 3e-4, "BF16": 2.2e-3, "Q8_0": 7e-3, "Q4_0": 0.11, "Q4_1": 0.10, "Q5_0": 0.055, "Q5_1": 0.05,
    "Q2_K": 0.37, "Q3_K": 0.19, "Q4_K": 0.09, "Q5_K": 0.045, "Q6_K": 0.022, "TQ1_0": 0.9, "TQ2_0": 0.9,
    "IQ4_NL": 0.095, "IQ4_XS": 0.095, "IQ3_S": 0.2, "IQ3_XXS": 0.26, "IQ2_S": 0.33, "IQ2_XS": 0.37,
    "IQ2_XXS": 0.43, "IQ1_M": 0.7, "IQ1_S": 0.56,
}


def dequantize(raw, type_name):
    """gguf's numpy reference dequantizer (no compile time; kvant's own is bit-exact with it)."""
    return np.asarray(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[type_name]), dtype=np.float32)


def expected(type_name):
    return np.load(os.path.join(FIXTURES, f"{type_name}.npz"))


def mismatching_blocks(ours, ref, type_name):
    size = ggml_type(type_name).type_size
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    return np.flatnonzero((ours.reshape(-1, size) != ref.reshape(-1, size)).any(axis=1))


def test_every_quantizer_has_a_fixture():
    assert set(FIXTURE_TYPES) <= {f[:-4] for f in os.listdir(FIXTURES) if f.endswith(".npz")}
    assert set(RMSE_BOUND) == set(FIXTURE_TYPES)


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("type_name", FIXTURE_TYPES)
def test_bytes_match_llamacpp(type_name, with_imatrix):
    ref = expected(type_name)
    if type_name in IMATRIX_ONLY and not with_imatrix:  # llama.cpp asserts one; kvant says so in one line
        with pytest.raises(ValueError, match=f"{type_name} needs an importance matrix: make one with `qconv imatrix"):
            quantize(INPUTS["r256"], type_name)
        return
    for s in SETS:
        key = s + "_imatrix" if with_imatrix else s
        im = INPUTS[s + "_imatrix"] if with_imatrix else None
        ours = quantize(INPUTS[s], type_name, im)
        bad = mismatching_blocks(ours, ref[key], type_name)
        assert bad.size == 0, f"{type_name} {key}: {bad.size} of {ours.size // ggml_type(type_name).type_size} " \
                              f"blocks differ from llama.cpp, first at {bad[:5]}"


@pytest.mark.parametrize("type_name", FIXTURE_TYPES)
def test_round_trip(type_name):
    x = np.random.default_rng(5).standard_normal((4, 512)).astype(np.float32)
    im = np.ones(512, np.float32) if type_name in IMATRIX_ONLY else None
    q = quantize(x, type_name, im)
    assert q.shape == (4, ggml_type(type_name).row_bytes(512))
    y = dequantize(q, type_name)
    rmse = float(np.sqrt(np.mean((y - x) ** 2)))
    assert rmse < RMSE_BOUND[type_name], f"{type_name} round-trip RMSE {rmse:.4g}"
    # a zero row stays zero, exactly
    assert not dequantize(quantize(np.zeros((1, 512), np.float32), type_name, im), type_name).any()


def _rmse(a, b, w=None):
    d2 = (a.astype(np.float64) - b) ** 2
    return float(np.sqrt(np.mean(d2 if w is None else d2 * w)))


@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
@pytest.mark.parametrize("type_name", ["IQ4_NL", "IQ4_XS"])
def test_iq4_error_not_worse_than_llamacpp(type_name, with_imatrix):
    """The IQ4 contract is error, not bytes: RMSE (and imatrix-weighted RMSE) against the float input no worse
    than llama.cpp's on the same data."""
    ref = expected(type_name)
    for s in SETS:
        x = INPUTS[s]
        im = INPUTS[s + "_imatrix"] if with_imatrix else None
        ours = dequantize(quantize(x, type_name, im), type_name)
        theirs = dequantize(ref[s + "_imatrix" if with_imatrix else s], type_name)
        for w in (None, im):
            assert _rmse(ours, x, w) <= _rmse(theirs, x, w) * (1 + 1e-9) + 1e-30


# ---------------------------------------------------------------------------------------------- hand-built blocks

def test_q8_0_block_by_hand():
    x = np.arange(-16, 16, dtype=np.float32).reshape(1, 32) / 4  # absmax 4 -> d = 4/127
    q = quantize(x, "Q8_0")[0]
    assert q[:2].view(np.float16)[0] == np.float16(np.float32(4) / np.float32(127))
    expect = np.floor(np.abs(x[0] * (np.float32(127) / 4)) + 0.5) * np.sign(x[0])  # roundf
    assert np.array_equal(q[2:].view(np.int8), expect.astype(np.int8))


def test_q4_0_block_by_hand():
    x = np.zeros((1, 32), np.float32)
    x[0, 0] = -8.0  # the signed absmax maps to code 0: d = -8 / -8 = 1
    x[0, 16] = 7.0
    x[0, 5] = 2.4
    q = quantize(x, "Q4_0")[0]
    assert q[:2].view(np.float16)[0] == 1.0
    nib = np.concatenate([q[2:] & 15, q[2:] >> 4])
    expect = np.full(32, 8)
    expect[0], expect[16], expect[5] = 0, 15, 10
    assert np.array_equal(nib, expect)


@pytest.mark.parametrize("type_name", ["TQ1_0", "TQ2_0"])
def test_ternary_values_are_exact(type_name):
    rng = np.random.default_rng(1)
    x = (rng.integers(-1, 2, (3, 512)) * 0.375).astype(np.float32)
    x[:, 0] = 0.375  # every block reaches the absmax
    x[:, 256] = -0.375
    assert np.array_equal(dequantize(quantize(x, type_name), type_name), x)


def test_floats():
    x = np.array([[0.0, -0.0, 1.0, 65504.0, 65520.0, 1e-8, 6e-8, np.inf, -np.inf, np.nan, 1 + 2 ** -11,
                   1 + 3 * 2 ** -11, 3.1415927, -2.5e-5, 1e38, 2 ** -24]], dtype=np.float32)
    f16 = quantize(x, "F16").view(np.uint16)
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16).view(np.uint16)
    finite = ~np.isnan(x)
    assert np.array_equal(f16[finite], ref[finite])  # round to nearest even, overflow to inf
    assert f16[0, 9] == 0x7E00  # ggml's quiet NaN
    bf16 = quantize(x, "BF16").view(np.uint16)
    assert bf16[0, 2] == 0x3F80 and bf16[0, 9] & 0x7FC0 == 0x7FC0
    assert np.array_equal(quantize(x, "F32").view(np.float32)[finite], x[finite])


# ---------------------------------------------------------------------------------------------- the shared layer

def test_type_spellings_and_shapes():
    x = np.random.default_rng(2).standard_normal((2, 3, 256)).astype(np.float32)
    ref = quantize(x.reshape(6, 256), "Q4_K")
    for t in ("Q4_K", "q4_k", 12, gguf.GGMLQuantizationType.Q4_K, ggml_type("Q4_K")):
        assert np.array_equal(quantize(x, t).reshape(6, -1), ref)
    assert quantize(x, "Q4_K").shape == (2, 3, 144)
    assert quantize(x[0, 0], "Q4_K").shape == (144,)
    assert np.array_equal(quantize(x.astype(np.float64), "Q4_K").reshape(6, -1), ref)
    assert np.array_equal(quantize(x[:, :, ::-1][:, :, ::-1], "Q4_K").reshape(6, -1), ref)  # non-contiguous
    assert quantize(np.zeros((0, 256), np.float32), "Q4_K").shape == (0, 144)
    ro = x.copy()
    ro.flags.writeable = False  # rows of a read-only memory map
    assert np.array_equal(quantize(ro, "Q4_K").reshape(6, -1), ref)


def test_errors_name_the_problem():
    x = np.zeros((2, 256), np.float32)
    with pytest.raises(UnknownTypeError, match="Q9_9"):
        quantize(x, "Q9_9")
    with pytest.raises(NoQuantizerError, match="MXFP4"):
        quantize(x, "MXFP4")
    with pytest.raises(ValueError, match="not a multiple of the Q4_K block size 256"):
        quantize(np.zeros((2, 96), np.float32), "Q4_K")
    with pytest.raises(ValueError, match="255 values, expected 256"):
        quantize(x, "Q4_K", np.ones(255, np.float32))
    with pytest.raises(ValueError, match="expected 2 x 256"):
        quantize(np.zeros((2, 3, 256), np.float32), "Q4_K", np.ones((3, 256), np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        quantize(x, "Q4_0", -np.ones(256, np.float32))
    with pytest.raises(TypeError):
        quantize(np.array([["a"] * 32]), "Q8_0")


def test_imatrix_metadata():
    assert quantize_requires_imatrix("IQ2_XXS") and quantize_requires_imatrix("IQ1_S")
    assert not quantize_requires_imatrix("Q4_K") and not quantize_requires_imatrix("Q2_K")
    assert USES_IMATRIX <= set(QUANT_TYPES)
    x = INPUTS["r512"]
    assert IMATRIX_ONLY <= USES_IMATRIX
    for t in set(QUANT_TYPES) - USES_IMATRIX:  # these ignore it, as llama.cpp does
        assert np.array_equal(quantize(x, t, INPUTS["r512_imatrix"]), quantize(x, t))


def test_imatrix_per_expert():
    """A 3-D (n_mat, rows, cols) tensor may carry one importance row per slice, flat or 2-D, as llama.cpp's
    imatrix stores MoE experts."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 256)).astype(np.float32)
    im = rng.uniform(0.1, 2.0, (2, 256)).astype(np.float32)
    each = np.stack([quantize(x[e], "Q4_K", im[e]) for e in range(2)])
    assert np.array_equal(quantize(x, "Q4_K", im), each)
    assert np.array_equal(quantize(x, "Q4_K", im.reshape(-1)), each)
    shared = quantize(x, "Q4_K", im[0])
    assert np.array_equal(shared[0], each[0]) and not np.array_equal(shared[1], each[1])


def test_quantization_error():
    x = INPUTS["r512"]
    rmse, max_abs = quantization_error(x, expected("Q8_0")["r512"], "Q8_0")
    d = dequantize(expected("Q8_0")["r512"], "Q8_0") - x
    assert rmse == pytest.approx(float(np.sqrt(np.mean(d.astype(np.float64) ** 2))))
    assert max_abs == pytest.approx(float(np.abs(d).max()))


@pytest.mark.parametrize("type_name", ["IQ1_S", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"])
def test_lattice_tables(type_name):
    """The neighbour lists the IQ1-IQ3 quantizers search (llama.cpp's iq2xs_init_impl / iq3xs_init_impl): every grid
    point maps to its own index, and an off-grid pattern lists the grid points at its nwant smallest squared
    distances, ordered by (distance, index) -- checked by brute force on a sample of patterns."""
    from kvant.formats.quant_iq_grids import _SPECS, grid_tables
    t, spec = grid_tables(type_name), _SPECS[type_name]
    dim = t.grid.shape[1]
    levels = (t.grid.astype(np.int64) - 1) // 2
    patterns = (levels << (spec.bits * np.arange(dim))).sum(axis=1)
    assert np.array_equal(t.map[patterns], np.arange(len(patterns)))
    off = np.flatnonzero(t.map < 0)
    assert len(off) + len(patterns) == spec.kmap_size
    for u in np.random.default_rng(3).choice(off, 200, replace=False):
        pos = 2 * ((u >> (spec.bits * np.arange(dim))) & ((1 << spec.bits) - 1)) + 1
        d2 = ((t.grid.astype(np.int64) - pos) ** 2).sum(axis=1)
        cutoff = np.unique(d2)[:spec.nwant][-1]
        want = np.lexsort((np.arange(len(d2)), d2))[:int((d2 <= cutoff).sum())]
        start = -t.map[u] - 1
        assert list(t.neighbours[start + 1:start + 1 + t.neighbours[start]]) == list(want), u


def test_every_search_variant_has_a_name_of_its_own():
    """The scale searches made by quant_common's factories must compile under distinct names: variants of one name
    share one on-disk cache index, and a process once bound a Q4_0 quantizer to Q5_0's search through it."""
    from numba.core.registry import CPUDispatcher

    from kvant.formats import quant_iq2, quant_kquants, quant_legacy
    variants = {id(v): v for m in (quant_legacy, quant_kquants, quant_iq2) for v in vars(m).values()
                if isinstance(v, CPUDispatcher) and "search" in v.py_func.__qualname__}
    constants = {}
    for v in variants.values():
        cells = tuple(c.cell_contents for c in v.py_func.__closure__ or ())
        constants.setdefault(v.py_func.__qualname__, set()).add(cells)
    assert len(variants) >= 15
    assert all(len(c) == 1 for c in constants.values()), {n: c for n, c in constants.items() if len(c) > 1}


def test_quantizers_closures_pickle_the_same_in_every_process():
    """numba keys a cached function's disk cache by a pickle of its closure's values: a dispatcher there (or a class
    made at run time) pickles with an id of its own process, so the kernel would compile again in every process.
    The kernels quant.quantize calls from Python may close over plain values only."""
    from kvant.formats.quant import QUANTIZERS

    def plain(value):
        if isinstance(value, tuple):
            return all(map(plain, value))
        return value is None or isinstance(value, (bool, int, float, str, bytes, np.generic))
    closures = {name: [c.cell_contents for c in k.py_func.__closure__ or ()]
                for name, k in QUANTIZERS.items() if hasattr(k, "py_func")}
    assert {name for name, cells in closures.items() if cells}, "no factory-made kernel found"
    assert not [name for name, cells in closures.items() if not all(map(plain, cells))]


@pytest.mark.parametrize("params, n, S", [((3, -0.9, 0.05, 36, False, True), 16, 16),
                                          ((3, -0.5, 0.1, 15, True, False), 16, 16),
                                          ((15, -0.9, 0.05, 36, False, True), 32, 8)])
def test_lane_search_equals_one_sub_block_at_a_time(params, n, S):
    """qkx_lanes_search gives the codes, scales and mins (to the bit) of S calls of the scalar qkx_search, also for
    the lanes it hands back to that one (zero sub-blocks: the search gives up), all positive or all negative
    sub-blocks, constant ones, very narrow ranges."""
    from kvant.formats.quant_common import qkx_lanes_search, qkx_search
    one, lanes = qkx_search(*params), qkx_lanes_search(*params)
    rng = np.random.default_rng(7)
    blocks = (rng.standard_normal((300, S, n)) * rng.uniform(1e-3, 2, (300, S, 1))).astype(np.float32)
    blocks[::3, 0] = 0.25
    blocks[::4, 1] = np.abs(blocks[::4, 1])
    blocks[::5, 2] = -np.abs(blocks[::5, 2]) - 1
    blocks[::6, 3] = -1 - np.abs(blocks[::6, 3]) * 1e-6
    blocks[::7, 4] = 0
    weights = (rng.uniform(0, 2, blocks.shape) * np.sqrt(1e-3 + blocks * blocks)).astype(np.float32)
    for x, w in zip(blocks.reshape(300, -1), weights.reshape(300, -1)):
        L, scales, mins = np.zeros(S * n, np.uint8), np.zeros(S, np.float32), np.zeros(S, np.float32)
        lanes(n, S, x, w, L, scales, mins)
        for j in range(S):
            Lj, aux = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
            scale, minus_min = one(n, x[j * n:(j + 1) * n], w[j * n:(j + 1) * n], Lj, aux)
            assert np.array_equal(L[j * n:(j + 1) * n], Lj), j
            assert np.float32(scale).tobytes() == scales[j].tobytes() and np.float32(minus_min).tobytes() == \
                mins[j].tobytes(), j
