"""The integer prefill GEMM (kernels/_gemm.py, CPUs with AVX-512 VNNI): each token's row of the product equals the
integer matvec of that token (both quantize x as llama.cpp does and sum each block exactly in int32), up to float
summation order; the tile decoders give the TILE order exactly; a model's prefill through it stays next to the float
path. The float path (QMatrix.matmul) is tested in test_kernels.py and runs on every CPU."""
import os
import sys

import numpy as np
import pytest
from gguf.quants import IQ4_NL

from kvant.runtime.kernels import SUPPORTED_TYPES, QMatrix, layout_for, prepare
from kvant.runtime.kernels._gemm import crumb_tile, int_matmul, quantize
from kvant.runtime.kernels._isa import INT_KERNELS
from kvant.runtime.kernels.actquant import SCHEMES

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_kernels import FP16_FIELDS, SPLIT_F16, as_matvec_sees, make_weight  # noqa: E402
from gguf import GGMLQuantizationType  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

needs_vnni = pytest.mark.skipif(not INT_KERNELS, reason="the integer GEMM needs an integer kernel path")
INT_TYPES = sorted(["IQ4_NL", "IQ4_XS", "Q4_0", "Q4_1", "Q2_K", "Q3_K", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0", "TQ1_0", "TQ2_0",
                    "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"])
SHAPES = [(1, 2), (3, 1), (37, 3), (611, 1), (40, 5)]     # (rows, blocks per row)


@needs_vnni
def test_registered_types():
    from kvant.runtime.kernels import higgs
    own = sorted(higgs.HIGGS_TYPES) if higgs.LOOKUP or higgs.PSHUFB else []     # HIGGS: the x86 paths' prefill
    assert sorted(name for name in SUPPORTED_TYPES if layout_for(name).gemm is not None) == sorted(INT_TYPES + own)


@needs_vnni
@pytest.mark.parametrize("name", INT_TYPES)
def test_gemm_rows_equal_the_integer_matvec(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    for rows, nblocks in SHAPES:
        raw, w = make_weight(name, rows, nblocks, rng)
        qm = prepare(raw, name)
        for n in (4, 5, 7, 33):     # every leftover group size of every path's tokens per weight load
            x = rng.standard_normal((n, w.shape[1])).astype(np.float32) * np.float32(3.0)
            x[0, :32] = 0.0                     # an all-zero block: scale 0
            out = np.full((n, rows), np.nan, np.float32)
            int_matmul(qm, out, x)
            bound = np.abs(x) @ np.abs(w).T + 1e-30
            assert qm.layout.matvec_rounds_x is not None        # every type here has an integer matvec
            ref = np.empty_like(out)
            for t in range(n):
                qm.matvec(ref[t], x[t])
            assert (np.abs(out - ref) / bound).max() < 2e-6, (rows, nblocks, n)


@needs_vnni
@pytest.mark.parametrize("name", INT_TYPES)
def test_gemm_exact_with_every_code_bit_set(name):
    """Every code byte 0xFF (the largest code of the 4- and 5-bit types, crumbs of 2 and 3, the lattices' sign bits
    all set) against activation codes all +127 or all -127: the AVX2 GEMM's int16 sums of several vpmaddubsw must
    not saturate (they are exact integers, so the product is the float64 one up to float rounding)."""
    rng = np.random.default_rng(7)
    raw, _ = make_weight(name, 37, 2, rng)
    fp16 = {o for o in FP16_FIELDS[name]} | ({o + 1 for o in FP16_FIELDS[name]})
    blocks = raw.reshape(37, 2, -1)
    for o in range(blocks.shape[2]):
        if o not in fp16 and name not in SPLIT_F16:
            blocks[:, :, o] = 0xFF
    w = dequantize(raw, GGMLQuantizationType[name]).astype(np.float64)
    qm = prepare(raw, name)
    x = np.empty((6, w.shape[1]), np.float32)
    x[:3], x[3:] = 1.0, -1.0
    x[1::3] *= rng.choice([-1.0, 1.0], w.shape[1]).astype(np.float32)     # and mixed signs
    out = np.full((6, 37), np.nan, np.float32)
    int_matmul(qm, out, x)
    ref = as_matvec_sees(qm, x).astype(np.float64) @ w.T
    bound = np.abs(x).astype(np.float64) @ np.abs(w).T + 1e-30
    # Q4_1's and Q5_1's min term takes the activations' block sums as fp16 (Q8_1, as llama.cpp): 2^-11 relative
    assert (np.abs(out - ref) / bound).max() < 1e-3
    matvec = np.empty_like(out)
    for t in range(6):
        qm.matvec(matvec[t], x[t])
    assert (np.abs(out - matvec) / bound).max() < 2e-6


@needs_vnni
def test_codes_are_the_matvec_rounding():
    """The codes times their scales are exactly what actquant's rounding gives."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 512)).astype(np.float32) * np.float32(10.0)
    for scheme in ("q8_0", "q8_k"):
        rounding = SCHEMES[scheme][0]
        xq, xd, xs, _ = quantize(x, scheme)
        rounded = np.empty_like(x)
        rounding(rounded, x)
        np.testing.assert_array_equal(xq.reshape(5, -1, 32) * xd[:, :, None], rounded.reshape(5, -1, 32))
        np.testing.assert_array_equal(xs, xq.reshape(5, -1, 32).astype(np.int64).sum(2))


def _tile_order(codes, r0):
    """The TILE order of rows r0..r0+15 of codes (rows, 32 nb) (rows past the end: the last row again)."""
    rows, cols = codes.shape
    wt = np.empty((cols // 32, 8, 16, 4), np.uint8)
    for j in range(16):
        wt[:, :, j, :] = codes[min(r0 + j, rows - 1)].reshape(-1, 8, 4)
    return wt.ravel()


@needs_vnni
def test_crumb_tile():
    """The CRUMB tile decoder (TQ1_0 / TQ2_0) gives the TILE order exactly."""
    from numba import njit

    @njit
    def run(wt, q, r0, nb):
        crumb_tile(wt, q, r0, nb)

    rng = np.random.default_rng(1)
    rows, nb = 37, 5
    crumb = rng.integers(0, 256, (rows, 8 * nb)).astype(np.uint8)
    codes = np.stack([(crumb >> (2 * u)) & 3 for u in range(4)], 2).reshape(rows, -1)
    for r0 in (0, 16, 32):
        wt = np.empty(512 * nb, np.uint8)
        run(wt, crumb, r0, nb)
        np.testing.assert_array_equal(wt, _tile_order(codes, r0))


@needs_vnni
@pytest.mark.parametrize("name", ["Q2_K", "Q3_K", "Q6_K"])
def test_per16_k_quant_tiles(name):
    """The tile decoders of the K-quants with a scale per 16 give the TILE order exactly: Q2_K's crumbs, Q3_K's
    crumbs + 4 * hmask bit, Q6_K's 6-bit codes + 96 (signed + 128), read from the file's blocks as llama.cpp lays them
    out; and their per-16 scales d * sc at 16 (2 b + half) + row."""
    from kvant.runtime.kernels import kquants, kquants_q6k16
    rng = np.random.default_rng(5)
    rows, nsb = 37, 2
    raw, _ = make_weight(name, rows, nsb, rng)
    qm = prepare(raw, name)
    blocks = raw.reshape(rows, nsb, -1)
    d = blocks[:, :, {"Q2_K": 80, "Q3_K": 108, "Q6_K": 208}[name]:][:, :, :2].copy().view(np.float16)[..., 0]
    if name == "Q6_K":
        ql, qh = blocks[:, :, :128].reshape(rows, nsb, 2, 2, 32), blocks[:, :, 128:192].reshape(rows, nsb, 2, 1, 32)
        u = np.arange(4).reshape(1, 1, 1, 4, 1)
        low = (ql[:, :, :, u[0, 0, 0, :, 0] & 1] >> (4 * (u >> 1))) & 15
        codes = (low | (((qh >> (2 * u)) & 3) << 4)).reshape(rows, -1).astype(np.uint8) + 96
        sc = blocks[:, :, 192:208].view(np.int8).astype(np.float32)
    else:
        qs = blocks[:, :, {"Q2_K": 16, "Q3_K": 32}[name]:][:, :, :64].reshape(rows, nsb, 2, 1, 32)
        codes = ((qs >> (2 * np.arange(4).reshape(1, 1, 1, 4, 1))) & 3).reshape(rows, -1)
        if name == "Q3_K":
            hm = blocks[:, :, :32].reshape(rows, nsb, 1, 32)
            codes = codes + 4 * ((hm >> np.arange(8).reshape(1, 1, 8, 1)) & 1).reshape(rows, -1)
            sc = qm.arrays[2].reshape(rows, nsb, 16).astype(np.float32)       # the repack's unpacked 6-bit scales
        else:
            sc = (blocks[:, :, :16] & 15).astype(np.float32)
    scale = (d.astype(np.float32)[:, :, None] * sc).reshape(rows, -1)      # (rows, 16 nsb): per 16 elements
    nb = 8 * nsb
    for r0 in (0, 16, 32):
        wt, ws, wm = np.empty(512 * nb, np.uint8), np.empty(32 * nb, np.float32), np.empty(32 * nb, np.float32)
        if name == "Q6_K":
            kquants_q6k16._tile(wt, ws, wm, r0, *qm.arrays)
        elif name == "Q3_K":
            c, h, sc3, d3 = qm.arrays
            kquants._k16_tile(wt, ws, wm, r0, c, h, sc3, d3, d3, True, False)
        else:
            c, sc2, d2, dm2 = qm.arrays
            kquants._k16_tile(wt, ws, wm, r0, c, c, sc2, d2, dm2, False, True)
            mins = (blocks[:, :, 82:84].copy().view(np.float16).astype(np.float32)
                    * (blocks[:, :, :16] >> 4)).reshape(rows, -1)
            np.testing.assert_array_equal(wm.reshape(-1, 16)[:, : min(16, rows - r0)].T, -mins[r0:r0 + 16])
        live = min(16, rows - r0)       # the rows past the end: Q6_K's zero padding, the others' last row again
        np.testing.assert_array_equal(wt.reshape(nb, 8, 16, 4)[:, :, :live],
                                      _tile_order(codes.astype(np.uint8), r0).reshape(nb, 8, 16, 4)[:, :, :live])
        np.testing.assert_array_equal(ws.reshape(-1, 16)[:, :live].T, scale[r0:r0 + live])


@needs_vnni
def test_nib16_tiles():
    """A NIB16 group (the file's Q4_0 / IQ4_NL / Q5_0 blocks of 16 rows interleaved) decodes to the TILE order: the
    4-bit codes, their IQ4 codebook values + 128, or with the 5th bits the 5-bit codes."""
    from numba import njit
    from kvant.runtime.kernels import blocks16
    from kvant.runtime.kernels._vnni16 import nib16_tile, nib16h_tile

    @njit
    def run(wt, q, nb, flag):
        nib16_tile(wt, q, nb, flag)

    @njit
    def run_h(wt, q, h, nb):
        nib16h_tile(wt, q, h, nb, 0)

    rng = np.random.default_rng(2)
    rows, nb = 48, 5
    nib = rng.integers(0, 256, (rows, nb, 16)).astype(np.uint8)
    qh = rng.integers(0, 256, (rows, nb, 4)).astype(np.uint8)
    codes = np.concatenate([nib & 15, nib >> 4], 2)                      # (rows, nb, 32), element order
    fifth = np.unpackbits(qh, axis=2, bitorder="little")                   # bit j of the u32: element j
    q4_blocks = np.concatenate([np.zeros((rows, nb, 2), np.uint8), nib], 2).reshape(rows, -1)
    q4 = blocks16._rp(18, 2, False, False)(q4_blocks, 32 * nb)[0]
    q5, h5, _ = blocks16._rp(22, 6, False, True)(np.concatenate([np.zeros((rows, nb, 2), np.uint8), qh, nib], 2)
                                              .reshape(rows, -1), 32 * nb)
    iq4 = (np.array(IQ4_NL.kvalues, np.int16) + 128).astype(np.uint8)
    for g in range(rows // 16):
        for flag, want in ((0, codes), (1, iq4[codes])):
            wt = np.empty(512 * nb, np.uint8)
            run(wt, q4[g], nb, flag)
            np.testing.assert_array_equal(wt, _tile_order(want.reshape(rows, -1), 16 * g))
        wt = np.empty(512 * nb, np.uint8)
        run_h(wt, q5[g], h5[g], nb)
        np.testing.assert_array_equal(wt, _tile_order((codes | fifth << 4).reshape(rows, -1), 16 * g))


REAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", ".work")


@needs_vnni
@pytest.mark.realmodel
@pytest.mark.parametrize("file, types", [("SmolLM2-135M-Instruct-Q4_K_M.gguf", ("Q4_K", "Q6_K")),
                                         ("SmolLM2-135M-Instruct-Q5_K_M.gguf", ("Q5_K",)),
                                         ("SmolLM2-135M-Instruct-IQ4_XS.gguf", ("IQ4_XS",))])
def test_gemm_real_tensors(file, types):
    """Real tensors of the bench files (where bench/.work has them): each token's row is the integer matvec's."""
    from kvant.formats.gguf_file import GGUFFile
    path = os.path.join(REAL, file)
    if not os.path.exists(path):
        pytest.skip(f"{file} not in bench/.work")
    rng = np.random.default_rng(0)
    seen = set()
    with GGUFFile(path) as f:
        for name, info in f.tensors.items():
            tname = info.ggml_type.name
            if len(info.shape) != 2 or tname not in types or (tname, info.shape[0]) in seen:
                continue
            seen.add((tname, info.shape[0]))
            raw = np.ascontiguousarray(f.raw(name)[:77])
            qm = prepare(raw, tname)
            x = rng.standard_normal((9, qm.shape[1])).astype(np.float32)
            out = np.full((9, raw.shape[0]), np.nan, np.float32)
            int_matmul(qm, out, x)
            ref = np.empty_like(out)
            for t in range(9):
                qm.matvec(ref[t], x[t])
            np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    assert seen


@needs_vnni
@pytest.mark.parametrize("weight_type", ["Q8_0", "Q4_0"])
def test_model_prefill_near_the_float_path(tmp_path, weight_type, monkeypatch):
    """A whole forward pass through the integer GEMM against the float GEMM on the same rounded activations. With an
    f32 cache: on an f16 one a last-bit difference of summation order (which differs between the kernel paths) can
    flip a cached value to the next f16 step, and the next Q8_0 rounding carries that on (1-2% of the logits)."""
    from kvant.runtime import Model
    from tiny_model import write_tiny_model
    path = tmp_path / "tiny.gguf"
    write_tiny_model(path, weight_type=weight_type)
    tokens = list(np.random.default_rng(0).integers(1, 200, 24))
    with Model(str(path), n_ctx=64, n_threads=2, kv_type="f32") as m:
        integer = m.transformer.forward(tokens, 0, m.cache, logits_from=0)
        monkeypatch.setattr(QMatrix, "gemm", None)     # every matrix without its GEMM: the float matmul runs
        floats = m.transformer.forward(tokens, 0, m.cache, logits_from=0)
    assert np.abs(integer - floats).max() < 1e-5 * np.abs(floats).max()


@pytest.mark.parametrize("kv_type", ["f16", "f32"])
def test_prefill_attention_equals_ops_attention(kv_type):
    """kernels._attn (blocks of queries) against ops.attention (one query at a time): the same rounding, only the
    summation order differs; GQA, a start inside the cache, sliding windows, head sizes not a multiple of 4."""
    from kvant.runtime.kernels import ops
    from kvant.runtime.kernels._attn import attention_prefill
    rng = np.random.default_rng(0)
    for n, start, window, n_head, n_kv, dk in ((37, 0, 0, 9, 3, 64), (20, 11, 0, 4, 2, 32), (50, 5, 16, 4, 4, 64),
                                               (8, 0, 0, 2, 1, 128), (5, 100, 7, 2, 2, 66)):
        k_cache = np.zeros((n_kv, 256, dk), ops.KV_TYPES[kv_type])
        v_cache = np.zeros((n_kv, 256, dk), ops.KV_TYPES[kv_type])
        ops.store_kv(k_cache, 0, rng.standard_normal((start + n, n_kv, dk)).astype(np.float32))
        ops.store_kv(v_cache, 0, rng.standard_normal((start + n, n_kv, dk)).astype(np.float32))
        q = rng.standard_normal((n, n_head, dk)).astype(np.float32) * np.float32(2.0)
        ref, out = np.empty((n, n_head, dk), np.float32), np.full((n, n_head, dk), np.nan, np.float32)
        ops.attention(ref, q, k_cache, v_cache, start, np.float32(0.125), window, np.float32(0.0))
        attention_prefill(out, q, k_cache, v_cache, start, np.float32(0.125), window, np.float32(0.0))
        np.testing.assert_allclose(out, ref, atol=1e-4)   # an f16-rounded probability may land one step away


def test_f16_rounding_is_numpys_float16():
    """F16 weights see their activations rounded to fp16 (llama.cpp's vec_dot type): normals, ties, subnormals,
    values rounding past 65504 to inf, inf and NaN, as numpy's float16 rounds them."""
    from kvant.runtime.kernels.actquant import f16, round_f16
    rng = np.random.default_rng(3)
    special = np.array([0.0, -0.0, 65504.0, 65519.0, 65520.0, -65520.0, 1e6, np.inf, -np.inf, np.nan,
                        2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -14, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11],
                       np.float32)
    x = np.concatenate([special, (rng.standard_normal(4000) * 10.0 ** rng.uniform(-9, 5, 4000)).astype(np.float32)])
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).astype(np.float32)
    rows = np.empty((2, x.shape[0]), np.float32)
    f16(rows, np.stack([x, x]))
    one = x.copy()
    round_f16(one)
    for got in (rows[0], rows[1], one):
        np.testing.assert_array_equal(got, want)
