"""The ggml type registry mirrors the gguf package's tables."""
import gguf
import numpy as np
import pytest

from kvant.formats.ggml_types import TYPES, GGMLType, UnknownTypeError, ggml_type
from kvant.formats.higgs_types import is_higgs


def test_registry_is_the_gguf_table_and_kvants_own_types():
    own = {t.id for t in TYPES.values() if is_higgs(t.name)}
    assert {t.id for t in TYPES.values()} - own == {int(q) for q in gguf.GGML_QUANT_SIZES}
    assert len(own) == 3 and min(own) >= 4096     # outside ggml's range: llama.cpp refuses them
    for q, (block_size, type_size) in gguf.GGML_QUANT_SIZES.items():
        t = ggml_type(q)
        assert (t.id, t.name, t.block_size, t.type_size) == (int(q), q.name, block_size, type_size)


@pytest.mark.parametrize("key", [12, np.int32(12), "Q4_K", "q4_k", gguf.GGMLQuantizationType.Q4_K])
def test_lookup_by_id_name_or_enum(key):
    assert ggml_type(key) == GGMLType(12, "Q4_K", 256, 144)
    assert ggml_type(ggml_type(key)) is ggml_type(key)


@pytest.mark.parametrize("bad", [4, 99, -1, "Q4_9", "", True, 1.0, None])
def test_unknown_type_names_the_value(bad):
    with pytest.raises(UnknownTypeError, match=repr(bad).replace("(", r"\(").replace(")", r"\)")):
        ggml_type(bad)
    assert issubclass(UnknownTypeError, ValueError)


def test_row_bytes():
    assert ggml_type("Q4_0").row_bytes(64) == 36
    assert ggml_type("F32").row_bytes(3) == 12
    assert ggml_type("Q6_K").row_bytes(512) == 420
    with pytest.raises(ValueError, match="block size 256"):
        ggml_type("Q4_K").row_bytes(100)
