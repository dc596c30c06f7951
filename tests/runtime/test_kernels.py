"""kvant.runtime.kernels against the numpy oracle: out == dequantize(W) @ x up to float rounding.

Weights are random bytes (every code value occurs) with the fp16 scale fields overwritten by small finite values;
float types are random normals. Tolerance: 1e-4 of sum |w||x| per output (the kernels fold codes and offsets into
the activations, which moves rounding, never the value).
"""
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from kvant.runtime.kernels.registry import SMALL_BATCH
from kvant.runtime.kernels import FLOAT, KERNELS, SUPPORTED_TYPES, UnsupportedTypeError, layout_for, prepare
from kvant.runtime.kernels._isa import CPU_PATH, INT_KERNELS
from kvant.runtime.kernels.actquant import VEC_DOT
from block_fields import FP16_FIELDS, SPLIT_F16, set_split_f16

# byte offsets of the fp16 scale fields inside one block
FLOATS = {"F32": np.float32, "F16": np.float16, "BF16": None}
ALL = sorted(FP16_FIELDS) + sorted(FLOATS)
SHAPES = [(1, 2), (3, 1), (37, 3), (611, 1)]    # (rows, blocks per row); 256-block types use 256 elements/block


def make_weight(name, rows, nblocks, rng):
    """(raw uint8 (rows, row_bytes), dequantized float64 (rows, cols))."""
    if name in FLOATS:
        cols = 32 * nblocks
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        if name == "BF16":
            bits = (w.view(np.uint32) >> 16).astype(np.uint16)
            return bits.view(np.uint8).reshape(rows, -1), (bits.astype(np.uint32) << 16).view(np.float32)
        w = w.astype(FLOATS[name])
        return w.view(np.uint8).reshape(rows, -1), w.astype(np.float32)
    qtype = GGMLQuantizationType[name]
    blk, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, nblocks, size), dtype=np.uint8)
    for off in FP16_FIELDS[name]:
        scale = (rng.random((rows, nblocks)) * 0.02 + 0.001) * rng.choice([-1, 1], (rows, nblocks))
        raw[:, :, off:off + 2] = scale.astype(np.float16).view(np.uint8).reshape(rows, nblocks, 2)
    if name in SPLIT_F16:
        scale = (rng.random((rows, nblocks)) * 0.02 + 0.001) * rng.choice([-1, 1], (rows, nblocks))
        set_split_f16(raw, SPLIT_F16[name], scale.astype(np.float16))
    raw = raw.reshape(rows, nblocks * size)
    return raw, dequantize(raw, qtype).astype(np.float32)


def check(out, w, x, tolerance=1e-4):
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    bound = np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64) + 1e-30
    err = np.abs(out - ref) / bound
    assert err.max() < tolerance, f"max relative error {err.max():.3g}"


def as_matvec_sees(qm, x):
    """x as the matvec multiplies it: integer kernels quantize it first (Layout.matvec_rounds_x)."""
    rounding = qm.layout.matvec_rounds_x
    if rounding is None:
        return x
    rounded = np.empty_like(x)
    rounding(rounded, x)
    return rounded


def test_q8_0_rounding_is_idempotent():
    """The model rounds activations before the matvec (actquant.VEC_DOT); an integer matvec quantizes them again,
    which must give back the same codes and scales."""
    from kvant.runtime.kernels.actquant import q8_0
    x = np.random.default_rng(5).standard_normal((3, 4096)).astype(np.float32) * np.float32(3.0)
    x[0, :32] = 0.0
    once, twice = np.empty_like(x), np.empty_like(x)
    q8_0(once, x)
    q8_0(twice, once)
    np.testing.assert_array_equal(once, twice)


def test_every_type_is_registered():
    """kvant's own HIGGS types are tested in test_higgs_kernels.py."""
    assert sorted(SUPPORTED_TYPES) == sorted(ALL + ["HG2", "HG3", "HG4"])


@pytest.mark.parametrize("name", ALL)
def test_matvec_and_matmul(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    # the integer Q4_1 / Q5_1 kernels take the min term from Q8_1's fp16 block sums, as llama.cpp: 2^-11 relative
    matvec_tolerance = 1e-3 if name in ("Q4_1", "Q5_1") and layout_for(name).matvec_rounds_x is not None else 1e-4
    for rows, nblocks in SHAPES:
        raw, w = make_weight(name, rows, nblocks, rng)
        qm = prepare(raw, name)
        assert qm.shape == w.shape
        x = rng.standard_normal(w.shape[1]).astype(np.float32)
        out = np.full(rows, np.nan, np.float32)
        qm.matvec(out, x)
        check(out[None], w, as_matvec_sees(qm, x[None]), matvec_tolerance)
        for n in (1, 5, 64):
            xs = rng.standard_normal((n, w.shape[1])).astype(np.float32)
            out = np.full((n, rows), np.nan, np.float32)
            qm.matmul(out, xs)
            if n < SMALL_BATCH:     # few tokens run as matvecs
                check(out, w, as_matvec_sees(qm, xs), matvec_tolerance)
            else:
                check(out, w, xs)


@pytest.mark.parametrize("name", ALL)
def test_float_path_matvec_and_matmul(name):
    """The float kernels (every type's KERNELS entry under FLOAT: what runs on a CPU with no integer path), run on
    every path: decode and prefill, x multiplied as given."""
    rng = np.random.default_rng(7)
    for rows, nblocks in SHAPES:
        raw, w = make_weight(name, rows, nblocks, rng)
        qm = prepare(raw, name, path=FLOAT)
        assert qm.layout is KERNELS[(name, FLOAT)] and qm.gemm is None
        x = rng.standard_normal(w.shape[1]).astype(np.float32)
        out = np.full(rows, np.nan, np.float32)
        qm.matvec(out, x)
        check(out[None], w, x[None])
        xs = rng.standard_normal((5, w.shape[1])).astype(np.float32)
        out = np.full((5, rows), np.nan, np.float32)
        qm.matmul(out, xs)
        check(out, w, xs)


def test_the_path_in_force_has_integer_kernels_for_every_quantized_type():
    """Every quantized type has its float kernels, and where the CPU has an integer path, integer ones with a
    prefill GEMM there (the float ones stay its fallback only on CPUs with none)."""
    quantized = sorted(FP16_FIELDS)
    assert all((name, FLOAT) in KERNELS for name in ALL)
    chosen = {name: layout_for(name) for name in quantized}
    if INT_KERNELS:
        assert all(layout is KERNELS[(name, CPU_PATH)] and layout.gemm is not None
                   and layout.matvec_rounds_x is VEC_DOT[name] for name, layout in chosen.items())
    else:
        assert all(layout is KERNELS[(name, FLOAT)] for name, layout in chosen.items())


def test_a_matrix_names_the_kernels_its_arrays_are_for():
    """The fused decode step picks its kernel by QMatrix.kernel_key: a float-path matrix on an integer CPU must name
    the float entry (its arrays are the float layout's); a path this process cannot run is refused in one line."""
    raw, _ = make_weight("Q4_K", 16, 1, np.random.default_rng(0))
    assert prepare(raw, "Q4_K", path=FLOAT).kernel_key == "Q4_K@float"
    assert prepare(raw, "Q4_K").kernel_key == ("Q4_K@" + CPU_PATH if INT_KERNELS else "Q4_K@float")
    assert prepare(np.zeros((2, 4), np.uint8), "F32").kernel_key == "F32@float"
    other = next(p for p in ("avx2", "avx512vnni") if p != CPU_PATH)
    with pytest.raises(ValueError, match="KVANT_CPU_PATH"):
        prepare(raw, "Q4_K", path=other)


def test_accepts_type_objects_and_names():
    class T:
        name = "Q8_0"
    raw, w = make_weight("Q8_0", 4, 2, np.random.default_rng(1))
    assert prepare(raw, T()).shape == prepare(raw, "q8_0").shape == (4, 64)


def test_nbytes_stays_modest():
    rng = np.random.default_rng(2)
    for name in ALL:
        raw, _ = make_weight(name, 16, 4, rng)     # 16 rows: ROWS16 layouts pad to a multiple of 16
        assert prepare(raw, name).nbytes <= 1.6 * raw.nbytes, name


@pytest.mark.parametrize("name", ["MXFP4", "NVFP4", "Q8_1"])
def test_unsupported_types_raise(name):
    with pytest.raises(UnsupportedTypeError, match=f"type {name} not supported yet"):
        prepare(np.zeros((2, 66), np.uint8), name)
    assert issubclass(UnsupportedTypeError, ValueError)


def test_bad_row_length_raises():
    with pytest.raises(ValueError):
        prepare(np.zeros((2, 35), np.uint8), "Q8_0")


def test_iq4_codebook_polynomial_is_exact():
    from gguf.quants import IQ4_NL

    from kvant.runtime.kernels.legacy import iq4_value
    got = [iq4_value(np.float32(n)) for n in range(16)]
    assert got == list(IQ4_NL.kvalues)


def test_shape_mismatch_raises():
    raw, _ = make_weight("Q4_0", 4, 2, np.random.default_rng(3))
    qm = prepare(raw, "Q4_0")
    with pytest.raises(ValueError):
        qm.matvec(np.zeros(4, np.float32), np.zeros(32, np.float32))
    with pytest.raises(ValueError):
        qm.matmul(np.zeros((2, 4), np.float32), np.zeros((3, 64), np.float32))


def test_prepare_stacked_is_the_row_concatenation():
    from kvant.runtime.kernels import prepare_stacked
    rng = np.random.default_rng(4)
    parts = [make_weight("Q6_K", rows, 1, rng) for rows in (5, 2, 2)]
    qm = prepare_stacked([raw for raw, _ in parts], "Q6_K")
    w = np.concatenate([w for _, w in parts])
    assert qm.shape == w.shape
    x = rng.standard_normal(w.shape[1]).astype(np.float32)
    out = np.empty(w.shape[0], np.float32)
    qm.matvec(out, x)
    check(out[None], w, as_matvec_sees(qm, x[None]))


def test_stacked_float_rows_start_on_a_cache_line():
    # float types are multiplied from the stacked bytes themselves: they get an aligned copy, the rows unchanged
    from kvant.runtime.kernels import prepare_stacked
    from kvant.runtime.kernels._common import CACHE_LINE
    rng = np.random.default_rng(5)
    parts = [make_weight("F16", rows, 2, rng) for rows in (3, 1, 1)]
    qm = prepare_stacked([raw for raw, _ in parts], "F16")
    assert qm.kernel_args[0].ctypes.data % CACHE_LINE == 0
    assert np.array_equal(qm.kernel_args[0].view(np.uint8).reshape(5, -1), np.concatenate([raw for raw, _ in parts]))
    with pytest.raises(ValueError):
        prepare_stacked([parts[0][0], parts[1][0][:, :-2]], "F16")      # rows of another length


def test_kernel_is_callable_from_jitted_code():
    from numba import njit

    @njit
    def call(kernel, out, x, args):
        kernel(out, x, *args)

    raw, w = make_weight("Q4_K", 3, 1, np.random.default_rng(5))
    qm = prepare(raw, "Q4_K")
    x = np.random.default_rng(6).standard_normal(w.shape[1]).astype(np.float32)
    out = np.empty(3, np.float32)
    call(qm.kernel, out, x, qm.kernel_args)
    check(out[None], w, as_matvec_sees(qm, x[None]))


@pytest.mark.parametrize("shape, dtype", [((3, 5, 2304), np.uint8), ((7, 16), np.uint16), ((2, 3, 5), np.int8),
                                          ((1,), np.float32)])
def test_repacked_records_start_on_a_cache_line(shape, dtype):
    from kvant.runtime.kernels._common import CACHE_LINE, zeros_on_lines
    for _ in range(4):       # several allocations: numpy alone lands 16 bytes into a page
        a = zeros_on_lines(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % CACHE_LINE == 0 and not a.any()


@pytest.mark.parametrize("name", ALL)
def test_a_nan_weight_reaches_its_row_of_the_output(name):
    """A corrupt weight (a NaN scale, or a NaN float) makes its row's output NaN on the kernel path in force (the
    sampler then refuses the logits): no kernel may compile under flags that let LLVM assume NaN away."""
    rng = np.random.default_rng(7)
    raw, w = make_weight(name, 37, 2, rng)
    raw = raw.copy()
    if name in FLOATS:
        bad = np.full(1, np.nan, np.float32)
        width = raw.shape[1] // w.shape[1]
        raw[5, :width] = (bad if name == "F32" else bad.astype(np.float16) if name == "F16"
                          else (bad.view(np.uint32) >> 16).astype(np.uint16)).view(np.uint8)
    elif name in SPLIT_F16:
        set_split_f16(raw[5, :56], SPLIT_F16[name], np.float16(np.nan))
    else:
        raw[5, FP16_FIELDS[name][0]:FP16_FIELDS[name][0] + 2] = np.float16(np.nan).reshape(1).view(np.uint8)
    qm = prepare(raw, name)
    x = rng.standard_normal(w.shape[1]).astype(np.float32)
    out = np.empty(37, np.float32)
    qm.matvec(out, x)
    assert np.isnan(out[5]) and np.isfinite(np.delete(out, 5)).all(), out
    from kvant.runtime.kernels._fgemm import GROUP
    for n in (5, GROUP + 5):    # both float GEMMs where the path has the outer-product one (GROUP tokens on)
        xs = rng.standard_normal((n, w.shape[1])).astype(np.float32)
        outs = np.empty((n, 37), np.float32)
        qm.matmul(outs, xs)
        assert np.isnan(outs[:, 5]).all() and np.isfinite(np.delete(outs, 5, axis=1)).all()


@pytest.mark.parametrize("name", ["F16", "BF16", "F32", "Q5_1", "Q6_K"])
def test_float_gemm_tails_and_column_chunks(name):
    """The outer-product float GEMM (_fgemm.py, 256-bit paths; elsewhere the dot-product one runs the same shapes):
    a last token group of 8 (21, 40 tokens), rows past the last full tile (37), and enough columns (2048) that the
    activations' columns run in chunks."""
    from kvant.runtime.kernels._fgemm import column_chunk, padded_tokens
    rng = np.random.default_rng(5)
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    block = 32 if name in FLOATS else GGML_QUANT_SIZES[GGMLQuantizationType[name]][0]
    raw, w = make_weight(name, 37, 2048 // block, rng)
    qm = prepare(raw, name)
    assert column_chunk(w.shape[1], padded_tokens(40)) < w.shape[1]
    for n in (16, 21, 40):
        xs = rng.standard_normal((n, w.shape[1])).astype(np.float32)
        out = np.full((n, 37), np.nan, np.float32)
        qm.matmul(out, xs)
        check(out, w, xs)
