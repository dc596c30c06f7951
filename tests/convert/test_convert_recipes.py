"""Per-tensor types of every preset against llama-quantize's own choices on SmolLM2-135M and gemma-3-270m.

The expected types are stored in tests/fixtures/convert/preset_types.json (tests/make_convert_fixtures.py presets):
the tensor list of each model and, per preset, the types llama.cpp gave each tensor, without an importance matrix
and ("PRESET+imatrix") with one (the 1-3 bit IQ presets and Q2_K_S are made only with one). SmolLM2's rows (576) are not a
multiple of 256 and gemma's (640) neither, so the row-length fallbacks are exercised too.
"""
import json
import os

import pytest

from kvant.convert import recipes
from kvant.formats.higgs_types import is_higgs

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures", "convert", "preset_types.json")
with open(FIXTURE, encoding="utf-8") as f:
    PRESET_TYPES = json.load(f)
CASES = [(model, preset) for model, e in PRESET_TYPES.items() for preset in e["presets"]]


def _model(key):
    e = PRESET_TYPES[key]
    tensors = [recipes.TensorIn(n, tuple(s), t) for n, s, t in e["tensors"]]
    return tensors, recipes.ModelFacts(**e["facts"])


@pytest.mark.parametrize("model,preset", CASES)
def test_preset_types_match_llama_quantize(model, preset):
    tensors, facts = _model(model)
    expected = PRESET_TYPES[model]["presets"][preset]
    plan = recipes.plan_types(tensors, preset.removesuffix("+imatrix"), facts, has_imatrix=expected["imatrix"])
    got = [plan[t.name] for t in tensors]
    want = expected["types"].split()
    diffs = [(t.name, g, w) for t, g, w in zip(tensors, got, want) if g != w]
    assert not diffs, f"{len(diffs)} tensors differ, first: {diffs[:5]}"
    assert recipes.file_type(preset.removesuffix("+imatrix")) == expected["file_type"]


def test_every_listed_preset_is_covered():
    llama_cpps = {p for p in recipes.PRESETS if not is_higgs(p)}      # kvant's own HIGGS presets: below
    for model in PRESET_TYPES.values():
        assert {p.removesuffix("+imatrix") for p in model["presets"]} == llama_cpps


@pytest.mark.parametrize("preset", ["HG4", "HG3", "HG2"])
def test_higgs_presets(preset):
    """Every matrix in the HIGGS type (SmolLM2's 576 = 9 x 64 columns fit its blocks), the tied head as in every
    quantized preset (Q6_K, whose 256-blocks do not fit: Q8_0); a row that is no multiple of 64: IQ4_NL."""
    tensors, facts = _model("smollm2")
    plan = recipes.plan_types(tensors, preset, facts)
    assert plan["token_embd.weight"] == "Q8_0" and plan["blk.0.attn_norm.weight"] == "F32"
    assert {plan[t.name] for t in tensors if t.name.startswith("blk.") and len(t.shape) == 2} == {preset}
    odd = [recipes.TensorIn("blk.0.ffn_down.weight", (64, 96), "F32")]
    assert recipes.plan_types(odd, preset, facts)["blk.0.ffn_down.weight"] == "IQ4_NL"


def test_aliases_and_unknown_names():
    assert recipes.resolve_preset("q4_k") == "Q4_K_M"
    with pytest.raises(recipes.PresetError) as e:
        recipes.resolve_preset("Q4_Z")
    assert "Q4_K_M" in str(e.value) and "TQ2_0" in str(e.value)


def test_tensor_type_override_and_fallback():
    tensors, facts = _model("smollm2")
    overrides = [recipes.parse_override(r"ffn_down=Q8_0"), recipes.parse_override(r"blk\.0\.attn_q=Q4_K")]
    plan = recipes.plan_types(tensors, "Q4_K_M", facts, overrides)
    assert plan["blk.3.ffn_down.weight"] == "Q8_0"
    assert plan["blk.0.attn_q.weight"] == "Q5_0"  # the override is Q4_K, but 576 columns fall back to Q5_0
    assert plan["blk.0.attn_norm.weight"] == "F32"


def test_use_more_bits_matches_llama_cpp():
    # layers 0-3 and the last 4 of 32, and every third one in between
    n = 32
    more = [i for i in range(n) if recipes.use_more_bits(i, n)]
    assert more == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_q2_k_s_needs_an_imatrix_as_in_llama_quantize():
    # llama-quantize (tensor_requires_imatrix) refuses Q2_K tensors of a Q2_K_S file without an importance matrix:
    # on SmolLM2 the 1536-wide ffn_down rows take Q2_K (the 576-wide ones fall back to Q4_0 and are allowed).
    tensors, facts = _model("smollm2")
    with pytest.raises(recipes.PresetError, match=r"Q2_K_S needs an importance matrix .*ffn_down.* Q2_K"):
        recipes.plan_types(tensors, "Q2_K_S", facts)
    plan = recipes.plan_types(tensors, "Q2_K_S", facts, has_imatrix=True)
    assert plan["blk.29.ffn_down.weight"] == "Q2_K" and plan["blk.0.ffn_down.weight"] == "Q4_K"
    assert recipes.plan_types(tensors, "Q2_K", facts)["blk.29.ffn_down.weight"] == "Q3_K"  # plain Q2_K: no need
    assert not recipes.requires_imatrix("output.weight", "IQ2_XXS", "Q2_K_S")
