"""The type specs (formats/specs.py) and the block layouts they name (formats/blocks.py), against the gguf package."""
import gguf
import numpy as np
import pytest
from gguf import quants as gq

from kvant.formats.blocks import BLOCKS, FIELDS
from kvant.formats.ggml_types import UnknownTypeError, ggml_type
from kvant.formats.specs import SPECS, Imatrix, spec
from kvant.runtime.kernels.actquant import VEC_DOT
from block_fields import FP16_FIELDS

FLOATS = {"F32", "F16", "BF16"}


def test_every_block_is_its_fields_in_order_and_fills_the_types_block_exactly():
    for name, fields in FIELDS.items():
        offsets = BLOCKS[name]
        assert list(offsets._fields) == [f for f, _ in fields] + ["size"]
        sizes = np.diff(list(offsets))
        assert list(sizes) == [n for _, n in fields] and min(sizes) > 0, name
        assert offsets.size == ggml_type(name).type_size, name


def test_every_spec_but_the_plain_floats_has_a_block_and_reads_what_it_writes():
    for name, s in SPECS.items():
        assert s.type.name == name
        assert (s.block is None) == (name in FLOATS), name
        assert s.codec is not None, f"{name} is written but cannot be read"


def test_spec_lookup_by_name_id_and_type_and_refusal_of_unknown_types():
    assert spec("q4_k") is spec(gguf.GGMLQuantizationType.Q4_K) is spec(12) is SPECS["Q4_K"]
    assert spec("Q8_K") is None     # known to ggml, neither read nor written by kvant: an activation type
    with pytest.raises(UnknownTypeError):
        spec("Q4_Z")


def test_the_runtime_rounds_activations_by_the_specs_scheme():
    assert VEC_DOT["Q4_1"] is VEC_DOT["Q8_0"] is not VEC_DOT["Q4_K"]
    assert set(VEC_DOT) == {name for name, s in SPECS.items() if s.activation is not None}
    assert "F32" not in VEC_DOT and "HG4" not in VEC_DOT


def test_imatrix_levels_nest():
    needed = {n for n, s in SPECS.items() if s.imatrix == Imatrix.NEEDED}
    assert needed == {"IQ1_S", "IQ2_XXS", "IQ2_XS"}  # llama.cpp's quantizers assert an importance matrix
    assert all(s.quantizer is not None for s in SPECS.values() if s.imatrix >= Imatrix.USED)


@pytest.mark.parametrize("name", [name for name, offsets in FP16_FIELDS.items() if offsets])
def test_the_named_fp16_scales_are_where_the_gguf_package_reads_them(name):
    """Doubling the fp16 values at the named scale offsets (d, m, dmin) doubles every value gguf.quants decodes:
    the offsets are ggml's, by the reference decoder rather than by kvant's codecs."""
    gt = ggml_type(name)
    rng = np.random.default_rng(gt.id)
    raw = rng.integers(0, 256, (16, gt.type_size), dtype=np.uint8)
    doubled = raw.copy()
    for at in FP16_FIELDS[name]:
        scale = rng.uniform(0.5, 2.0, raw.shape[0]).astype(np.float16)
        raw[:, at:at + 2] = scale.view(np.uint8).reshape(-1, 2)
        doubled[:, at:at + 2] = (scale * np.float16(2)).view(np.uint8).reshape(-1, 2)
    qtype = gguf.GGMLQuantizationType[name]
    x, x2 = gq.dequantize(raw, qtype), gq.dequantize(doubled, qtype)
    assert np.isfinite(x).all() and np.any(x != 0)
    np.testing.assert_array_equal(x2, 2 * x)
