"""kvant's HIGGS file types HG4, HG3, HG2: registry entries, block layout (decoded here by numpy alone), the
quantizer's error against the grids' Gaussian figures, and the metadata checks at open."""
import numpy as np
import pytest

from kvant.convert.gguf_writer import GGUFWriter, tensor_spec
from kvant.formats import higgs_grids, higgs_types
from kvant.formats.dequant import dequantize
from kvant.formats.ggml_types import ggml_type
from kvant.formats.gguf_file import GGUFError, GGUFFile
from kvant.formats.quant import quantize

NAMES = ("HG4", "HG3", "HG2")
BITS = {"HG4": 4.25, "HG3": 3.25, "HG2": 2.25}
POINTS = {"HG4": 256, "HG3": 64, "HG2": 16}


def _sylvester(h):
    m = np.ones((1, 1))
    while m.shape[0] < h:
        m = np.block([[m, m], [m, -m]])
    return m / np.sqrt(h)


def numpy_codes(blocks, name):
    """The 32 codes of each block (..., type_size) by the layout in higgs_types' docstring."""
    q = blocks[..., 2:].astype(np.int64)
    if name == "HG4":
        return q
    nib = np.concatenate([q[..., :16] & 15, q[..., :16] >> 4], axis=-1)
    if name == "HG2":
        return nib
    crumbs = np.concatenate([(q[..., 16:24] >> (2 * k)) & 3 for k in range(4)], axis=-1)
    return nib | (crumbs << 4)


def numpy_decode(raw, name):
    """float64 rows: d * grid[code] per pair, each 64-block times the orthonormal Hadamard matrix."""
    size = ggml_type(name).type_size
    blocks = raw.reshape(raw.shape[0], -1, size)
    d = blocks[..., :2].copy().view(np.float16)[..., 0].astype(np.float64)
    pairs = higgs_types.grid(name).astype(np.float64)[numpy_codes(blocks, name)]      # (rows, blocks, 32, 2)
    rotated = d[..., None] * pairs.reshape(*pairs.shape[:2], 64)
    return (rotated @ _sylvester(64)).reshape(raw.shape[0], -1)


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry(name):
    t = ggml_type(name)
    assert t.id >= 4096 and t.block_size == 64 and ggml_type(t.id) is t
    assert 8 * t.type_size / t.block_size == BITS[name]
    assert higgs_types.grid(name).shape == (POINTS[name], 2)
    q, step = higgs_types.grid_codes(name), higgs_types.grid_step(name)
    assert np.abs(q).max() == 127                                   # int8, as the kernels hold it, the finest step
    assert np.array_equal(higgs_types.grid(name), (q * step).astype(np.float32))
    assert np.abs(higgs_types.grid(name) - higgs_grids.grid(2, POINTS[name])).max() <= step / 2 * 1.0001
    assert len(np.unique(q, axis=0)) == POINTS[name]                # the rounding merged no points


@pytest.mark.parametrize("name", NAMES)
def test_decoder_is_the_layout_and_the_rotation(name):
    rng = np.random.default_rng(POINTS[name])
    x = (rng.standard_normal((7, 192)) * np.linspace(0.01, 0.2, 192)).astype(np.float32)
    raw = quantize(x, name)
    assert raw.shape == (7, 3 * ggml_type(name).type_size)
    assert np.allclose(dequantize(raw, name), numpy_decode(raw, name), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_every_code_of_the_grid_is_used_and_the_error_is_the_grids(name):
    """Gaussian rows: the relative squared error is about the grid's MSE for a unit Gaussian pair (rotation keeps the
    values Gaussian), a little below it as each block's scale is fitted to the block (least squares)."""
    x = np.random.default_rng(3).standard_normal((256, 512)).astype(np.float32)
    raw = quantize(x, name)
    size = ggml_type(name).type_size
    assert len(np.unique(numpy_codes(raw.reshape(-1, size), name))) == POINTS[name]
    rel = np.mean((dequantize(raw, name) - x) ** 2) / np.mean(x ** 2)
    assert 0.8 < rel / higgs_grids.mse(higgs_types.grid(name)) < 1.0


def test_rows_must_be_whole_blocks():
    with pytest.raises(ValueError, match="block size 64"):
        quantize(np.zeros((2, 96), np.float32), "HG4")


def test_zero_blocks_stay_zero_and_a_lone_spike_is_spread():
    """A block of zeros decodes to zeros; a lone spike rotates into +-s/8 everywhere, which the grid holds well."""
    x = np.zeros((2, 128), np.float32)
    x[1, 64 + 5] = 3.0
    for name in NAMES:
        y = dequantize(quantize(x, name), name)
        assert np.all(y[0] == 0) and np.all(y[1, :64] == 0), name
        assert np.sum((y[1] - x[1]) ** 2) < 0.1 * np.sum(x[1] ** 2), name


def _write(path, name, meta):
    raw = quantize(np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32), name)
    with GGUFWriter(str(path), meta, [tensor_spec("w", (4, 64), name)]) as w:
        w.write_tensor("w", raw)
    return raw


def _gguf_values(pairs):
    from gguf import GGUFValueType
    from gguf.gguf_writer import GGUFValue
    return [(k, GGUFValue(v, GGUFValueType.ARRAY, GGUFValueType.FLOAT32) if isinstance(v, np.ndarray)
             else GGUFValue(int(v), GGUFValueType.UINT32)) for k, v in pairs]


def test_file_with_its_grid_opens(tmp_path):
    raw = _write(tmp_path / "ok.gguf", "HG2", _gguf_values(higgs_types.metadata(["HG2", "F32"])))
    with GGUFFile(tmp_path / "ok.gguf") as g:
        assert g.tensors["w"].ggml_type.name == "HG2"
        assert np.array_equal(g.raw("w"), raw)


@pytest.mark.parametrize("case, match", [
    ("missing", "HIGGS version None"),
    ("version", "HIGGS version 2"),          # a file of an older kvant: grids in multiples of 2^-5
    ("grid", "HG4 grid in key kvant.higgs.grid.HG4 is not the one"),
    ("other grid", "HG4 grid in key kvant.higgs.grid.HG4 is not the one"),
])
def test_unknown_version_or_grid_is_refused(tmp_path, case, match):
    meta = dict(higgs_types.metadata(["HG4"]))
    if case == "missing":
        meta = {}
    elif case == "version":
        meta[higgs_types.KEY_VERSION] = 2
    elif case == "grid":
        meta[higgs_types.KEY_GRID + "HG4"] = meta[higgs_types.KEY_GRID + "HG4"] * 1.01
    else:
        del meta[higgs_types.KEY_GRID + "HG4"]
        meta[higgs_types.KEY_GRID + "HG3"] = higgs_types.grid("HG3").reshape(-1)
    _write(tmp_path / "bad.gguf", "HG4", _gguf_values(meta.items()))
    with pytest.raises(GGUFError, match=match):
        GGUFFile(tmp_path / "bad.gguf")
