"""HIGGS building blocks: the stored Gaussian grids, the Walsh-Hadamard rotation, the quantizer and decoder, against
numpy references and the published optimal-quantizer figures."""
import numpy as np
import pytest

from kvant.formats import higgs_grids
from kvant.formats.hadamard import rotated
from kvant.formats.quant_higgs import HiggsSpec, dequantize, quantize

# Max (1960), "Quantizing for minimum distortion": MSE of the n-level optimal quantizer of N(0, 1)
MAX_1960 = {2: 0.3634, 4: 0.1175, 8: 0.03454, 16: 0.009497}


@pytest.mark.parametrize("n", sorted(MAX_1960))
def test_scalar_grids_are_lloyd_max(n):
    stored = higgs_grids.grid(1, n)[:, 0]
    assert np.allclose(stored, -stored[::-1], atol=1e-6)                     # symmetric
    assert np.allclose(stored, higgs_grids.lloyd_max(n), atol=1e-6)          # the documented procedure
    assert higgs_grids.mse(higgs_grids.grid(1, n)) == pytest.approx(MAX_1960[n], rel=0.01)


@pytest.mark.parametrize("n, scalar_n", [(16, 4), (64, 8), (256, 16)])
def test_pair_grids_beat_the_scalar_grid_of_the_same_bits(n, scalar_n):
    g = higgs_grids.grid(2, n)
    assert g.shape == (n, 2) and len(np.unique(g, axis=0)) == n
    err = higgs_grids.mse(g)
    assert err < 0.95 * MAX_1960[scalar_n]
    # a fixed point of Lloyd's algorithm: every point is (close to) the mean of the samples nearest to it
    pts = np.random.default_rng(2).standard_normal((1 << 20, 2))
    assign = np.empty(len(pts), np.int64)
    higgs_grids.nearest(pts, g.astype(np.float64), assign)
    counts = np.bincount(assign, minlength=n)
    means = np.stack([np.bincount(assign, pts[:, k], minlength=n) for k in range(2)], 1) / counts[:, None]
    # (sampling noise: the smallest cells of the 256-point grid hold a few hundred of the 2^20 samples)
    assert np.abs(means - g).max() < {16: 0.01, 64: 0.02, 256: 0.08}[n]


def test_the_256_point_grid_is_centrally_symmetric():
    """Point c + 128 is point c negated, exactly (the VBMI kernels hold half the grid and negate by the top bit), at
    little cost: its error is 0.13% above version 2's unconstrained grid (0.0077498 per dimension, seed 1)."""
    g = higgs_grids.grid(2, 256)
    assert np.array_equal(g[128:], -g[:128]) and (2, 256) in higgs_grids.SYMMETRIC
    assert higgs_grids.mse(g) < 0.0077498 * 1.002


def test_unknown_grid_is_refused():
    with pytest.raises(KeyError, match="p=3"):
        higgs_grids.grid(3, 512)


def _sylvester(h):
    m = np.ones((1, 1))
    while m.shape[0] < h:
        m = np.block([[m, m], [m, -m]])
    return m / np.sqrt(h)


@pytest.mark.parametrize("h", [2, 16, 64, 256])
def test_rotation_is_the_orthonormal_hadamard_matrix_per_block(h):
    x = np.random.default_rng(h).standard_normal((3, 2 * h)).astype(np.float32)
    want = np.concatenate([x[:, :h] @ _sylvester(h).T, x[:, h:] @ _sylvester(h).T], axis=1)
    got = rotated(x, h)
    assert np.allclose(got, want, atol=1e-5)
    assert np.allclose(rotated(got, h), x, atol=1e-5)            # its own inverse


SPECS = [HiggsSpec(1, 16, 64, 64), HiggsSpec(2, 256, 64, 64), HiggsSpec(2, 64, 128, 32), HiggsSpec(2, 16, 32, 32),
         HiggsSpec(1, 4, 64, 16)]


def _weights(rows=24, cols=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32) * 0.02
    x[:, 7] *= 30                                                      # an outlier channel, as real layers have
    x[3] = 0                                                           # an all-zero row
    return x


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_decoding_is_scale_times_grid_point_rotated_back(spec):
    x = _weights()
    codes, scales = quantize(x, spec)
    assert codes.shape == (24, 256 // spec.p) and scales.shape == (24, 256 // spec.s) and scales.dtype == np.float16
    assert codes.max() < spec.n
    values = spec.grid[codes].reshape(24, 256) * np.repeat(scales.astype(np.float32), spec.s, axis=1)
    assert np.allclose(dequantize(codes, scales, spec), rotated(values, spec.h), atol=1e-6)
    assert not dequantize(codes, scales, spec)[3].any()


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_quantizer_is_no_worse_than_rounding_at_the_rms_scale(spec):
    """The numpy reference of HIGGS as published (scale = the group's RMS, nearest grid point), per group: the
    quantizer's refined scales never lose to it, and gain on the whole."""
    x = _weights(seed=1)
    v = rotated(x, spec.h).reshape(24, -1, spec.s)
    rms = np.sqrt((v * v).mean(-1, keepdims=True))
    z = (v / np.where(rms > 0, rms, 1)).reshape(-1, spec.p)
    near = np.argmin(((z[:, None, :] - spec.grid[None]) ** 2).sum(-1), axis=1)
    ref = spec.grid[near].reshape(v.shape) * rms
    ref_err = ((ref - v) ** 2).sum(-1)
    codes, scales = quantize(x, spec)
    got = spec.grid[codes].reshape(v.shape) * scales.astype(np.float32)[..., None]
    err = ((got - v) ** 2).sum(-1)
    assert np.all(err <= ref_err * 1.002 + 1e-12)                      # fp16 scale rounding aside
    assert err.sum() < ref_err.sum()


def test_a_block_that_does_not_divide_the_row_is_refused():
    with pytest.raises(ValueError, match="multiple of the HIGGS block size 64"):
        quantize(np.zeros((2, 96), np.float32), HiggsSpec(2, 256, 64, 64))
    with pytest.raises(ValueError, match="do not nest"):
        quantize(np.zeros((2, 96), np.float32), HiggsSpec(2, 256, 48, 48))
