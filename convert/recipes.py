"""Quantization presets as data: (tensor name, layer, n_layers, model facts) -> ggml type.

The rules are llama.cpp's (src/llama-quant.cpp: tensor_allows_quantization, llama_tensor_get_type_impl,
tensor_type_fallback, llama_ftype_get_default_type), restated as tables:
  PRESETS       preset name -> (general.file_type, default ggml type)
  RULES         tensor category -> ordered rules; the first whose presets and condition match sets the type
  FALLBACKS     the type to use when a row is not a whole number of the chosen type's blocks
The per-layer rules see `i`, the tensor's ordinal among the tensors of its category, counted in llama-quantize's
order (tensors sorted by layer, then name), and `n`, the category's count: for an ordinary model, the layer index and
the number of layers. plan_types() walks the tensors in that order, so its counters are llama.cpp's exactly.

--tensor-type REGEX=TYPE overrides are searched in the order given (the first regex found in the name wins), as
llama-quantize does; unlike llama-quantize they also apply to the float presets (F32, F16, BF16).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from gguf import LlamaFileType

from kvant.formats.ggml_types import UnknownTypeError, ggml_type

# preset -> (general.file_type, default type). Aliases as llama-quantize accepts them (Q4_K means Q4_K_M).
PRESETS: dict[str, tuple[LlamaFileType, str]] = {
    "F32": (LlamaFileType.ALL_F32, "F32"),
    "F16": (LlamaFileType.MOSTLY_F16, "F16"),
    "BF16": (LlamaFileType.MOSTLY_BF16, "BF16"),
    "Q8_0": (LlamaFileType.MOSTLY_Q8_0, "Q8_0"),
    "Q4_0": (LlamaFileType.MOSTLY_Q4_0, "Q4_0"),
    "Q4_1": (LlamaFileType.MOSTLY_Q4_1, "Q4_1"),
    "Q5_0": (LlamaFileType.MOSTLY_Q5_0, "Q5_0"),
    "Q5_1": (LlamaFileType.MOSTLY_Q5_1, "Q5_1"),
    "Q2_K": (LlamaFileType.MOSTLY_Q2_K, "Q2_K"),
    "Q2_K_S": (LlamaFileType.MOSTLY_Q2_K_S, "Q2_K"),
    "Q3_K_S": (LlamaFileType.MOSTLY_Q3_K_S, "Q3_K"),
    "Q3_K_M": (LlamaFileType.MOSTLY_Q3_K_M, "Q3_K"),
    "Q3_K_L": (LlamaFileType.MOSTLY_Q3_K_L, "Q3_K"),
    "Q4_K_S": (LlamaFileType.MOSTLY_Q4_K_S, "Q4_K"),
    "Q4_K_M": (LlamaFileType.MOSTLY_Q4_K_M, "Q4_K"),
    "Q5_K_S": (LlamaFileType.MOSTLY_Q5_K_S, "Q5_K"),
    "Q5_K_M": (LlamaFileType.MOSTLY_Q5_K_M, "Q5_K"),
    "Q6_K": (LlamaFileType.MOSTLY_Q6_K, "Q6_K"),
    "IQ1_S": (LlamaFileType.MOSTLY_IQ1_S, "IQ1_S"),
    "IQ1_M": (LlamaFileType.MOSTLY_IQ1_M, "IQ1_M"),
    "IQ2_XXS": (LlamaFileType.MOSTLY_IQ2_XXS, "IQ2_XXS"),
    "IQ2_XS": (LlamaFileType.MOSTLY_IQ2_XS, "IQ2_XS"),
    "IQ2_S": (LlamaFileType.MOSTLY_IQ2_S, "IQ2_XS"),  # llama.cpp's naming: the IQ2_S mix is mostly IQ2_XS
    "IQ2_M": (LlamaFileType.MOSTLY_IQ2_M, "IQ2_S"),
    "IQ3_XXS": (LlamaFileType.MOSTLY_IQ3_XXS, "IQ3_XXS"),
    "IQ3_XS": (LlamaFileType.MOSTLY_IQ3_XS, "IQ3_S"),
    "IQ3_S": (LlamaFileType.MOSTLY_IQ3_S, "IQ3_S"),
    "IQ3_M": (LlamaFileType.MOSTLY_IQ3_M, "IQ3_S"),
    "IQ4_NL": (LlamaFileType.MOSTLY_IQ4_NL, "IQ4_NL"),
    "IQ4_XS": (LlamaFileType.MOSTLY_IQ4_XS, "IQ4_XS"),
    "TQ1_0": (LlamaFileType.MOSTLY_TQ1_0, "TQ1_0"),
    "TQ2_0": (LlamaFileType.MOSTLY_TQ2_0, "TQ2_0"),
    # kvant's own HIGGS types (formats/higgs_types.py): no llama.cpp file type names them
    "HG4": (LlamaFileType.GUESSED, "HG4"),
    "HG3": (LlamaFileType.GUESSED, "HG3"),
    "HG2": (LlamaFileType.GUESSED, "HG2"),
}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}
# `qconv quantize --target-bpw`'s candidate types unless --types says otherwise (convert/allocate.py)
ALLOCATE_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0")
FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})

# Row length not a multiple of the chosen type's block: llama.cpp's tensor_type_fallback. A 32-block type that
# does not fit either, or a fallback that does not fit, becomes F16.
FALLBACKS = {
    "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ2_S": "IQ4_NL",
    "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ4_XS": "IQ4_NL",
    "Q2_K": "Q4_0", "Q3_K": "Q4_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
    "HG4": "IQ4_NL", "HG3": "IQ4_NL", "HG2": "IQ4_NL",   # kvant's: rows that are no multiple of 64
}


class PresetError(ValueError):
    """An unknown preset or type name (the message lists the valid ones)."""


def valid_names() -> list[str]:
    return list(PRESETS) + sorted(ALIASES)


def resolve_preset(name: str) -> str:
    key = name.strip().upper()
    key = ALIASES.get(key, key)
    if key not in PRESETS:
        raise PresetError(f"unknown type or preset {name!r}; valid: {', '.join(valid_names())}")
    return key


def parse_override(text: str) -> tuple[re.Pattern, str]:
    """--tensor-type REGEX=TYPE (the last '=' separates them; TYPE is a ggml type name)."""
    pattern, sep, type_name = text.rpartition("=")
    if not sep or not pattern or not type_name:
        raise PresetError(f"--tensor-type expects REGEX=TYPE, got {text!r}")
    try:
        t = ggml_type(type_name.strip()).name
    except UnknownTypeError:
        from kvant.formats.ggml_types import TYPES_BY_NAME
        raise PresetError(f"--tensor-type {text!r}: unknown ggml type {type_name!r}; valid: "
                          f"{', '.join(TYPES_BY_NAME)}") from None
    try:
        return re.compile(pattern), t
    except re.error as e:
        raise PresetError(f"--tensor-type {text!r}: bad regular expression ({e})") from None


# ---- tensor categories (llama.cpp tensor_get_category: whole names for output / token_embd, else substrings) ----
CATEGORIES = (  # (category, test on the name), first match wins
    ("output", lambda n: n == "output.weight"),
    ("token_embd", lambda n: n in ("token_embd.weight", "per_layer_token_embd.weight")),
    ("attn_qkv", lambda n: "attn_qkv.weight" in n),
    ("attn_kv_b", lambda n: "attn_kv_b.weight" in n),
    ("attn_v", lambda n: "attn_v.weight" in n),
    ("attn_k", lambda n: "attn_k.weight" in n),
    ("attn_q", lambda n: "attn_q.weight" in n),
    ("attn_output", lambda n: "attn_output.weight" in n),
    ("ffn_up", lambda n: "ffn_up" in n),
    ("ffn_gate", lambda n: "ffn_gate" in n),
    ("ffn_down", lambda n: "ffn_down" in n),
)
ATTN_V_LIKE = frozenset({"attn_v", "attn_qkv", "attn_kv_b"})
# Categories whose rules count their tensors (the `i` the rules see).
COUNTED = {"attn_v": "attn_v", "attn_qkv": "attn_v", "attn_kv_b": "attn_v", "ffn_down": "ffn_down",
           "ffn_gate": "ffn_gate", "ffn_up": "ffn_up"}


def category(name: str) -> str:
    return next((c for c, test in CATEGORIES if test(name)), "other")


# Names llama-quantize never quantizes (tensor_allows_quantization), beyond "2-D or more and ends in weight".
NEVER_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
                   "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
                   "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
                   "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
                   "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
                   "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
                   "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", ".rel_pos", ".patch_embd",
                   ".patch_merger")
NEVER_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")


def ggml_n_dims(shape) -> int:
    """ggml_n_dims: dimensions up to the last one longer than 1 (numpy shape (1, 256) is 1-D to ggml)."""
    ne = list(reversed(shape))
    return max((i + 1 for i, d in enumerate(ne) if d > 1), default=1)


def allows_quantization(name: str, shape, quantize_output: bool = True) -> bool:
    if ggml_n_dims(shape) < 2 or not name.endswith("weight"):
        return False
    if name in NEVER_QUANTIZED_NAMES or (not quantize_output and name == "output.weight"):
        return False
    return not any(s in name for s in NEVER_QUANTIZED)


# ---- the rules ----
@dataclass(frozen=True)
class ModelFacts:
    """What llama.cpp's rules know about the model."""
    arch: str = "llama"
    n_layer: int = 0
    n_head: int = 1
    n_head_kv: int = 1
    n_expert: int = 0
    is_70b: bool = False  # llama with 80 layers and GQA (LLM_TYPE_70B)

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0


@dataclass(frozen=True)
class Ctx:
    """One tensor as a rule sees it."""
    preset: str
    default: str  # the preset's default type
    ne0: int
    i: int  # ordinal within the counted category
    n: int  # size of the counted category
    model: ModelFacts
    has_imatrix: bool


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass(frozen=True)
class Rule:
    presets: frozenset
    type: str
    when: Callable[[Ctx], bool] = field(default=lambda c: True)


def _r(presets: str, type_: str, when=None) -> Rule:
    return Rule(frozenset(presets.split()), type_, when or (lambda c: True))


ALL = " ".join(PRESETS)
IQ_LOW = "IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ1_S IQ1_M IQ3_XXS"  # mixes whose output goes to Q5_K
# The 1-2 bit mixes: llama.cpp decides their layer tensors in a branch of their own (IQ_MIX_RULES), before and
# instead of the per-category rules below; only the output and token embedding rules are shared.
IQ_MIXES = frozenset("IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ1_S IQ1_M".split())

RULES: dict[str, tuple[Rule, ...]] = {
    # output.weight, and token_embd when the head is tied to it
    "output": (
        _r(ALL, "Q8_0", lambda c: c.model.arch == "falcon" or c.ne0 % ggml_type(c.default).block_size != 0),
        _r(IQ_LOW, "Q5_K"),
        _r(ALL, "Q6_K", lambda c: c.default != "Q8_0"),
    ),
    "token_embd": (
        _r("IQ2_XXS IQ2_XS IQ1_S IQ1_M", "Q2_K"),
        _r("IQ2_S IQ2_M IQ3_XXS", "IQ3_S"),
        _r("TQ1_0 TQ2_0", "Q4_K"),
    ),
    "attn_v": (
        _r("Q2_K", "Q4_K", lambda c: c.model.n_gqa >= 4),
        _r("Q2_K", "Q3_K"),
        _r("Q2_K_S", "Q4_K", lambda c: c.model.n_gqa >= 4),
        _r("IQ3_XXS", "Q4_K", lambda c: c.model.n_gqa >= 4),
        _r("IQ3_XXS", "IQ3_S", lambda c: not c.has_imatrix),
        _r("IQ3_XS IQ3_S", "Q4_K", lambda c: c.model.n_gqa >= 4),
        _r("IQ3_M", "Q4_K"),
        _r("Q3_K_M", "Q5_K", lambda c: c.i < 2),
        _r("Q3_K_M", "Q4_K"),
        _r("Q3_K_L", "Q5_K"),
        _r("IQ4_NL IQ4_XS", "Q5_K", lambda c: c.model.n_gqa >= 4),
        _r("Q4_K_M Q5_K_M", "Q6_K", lambda c: use_more_bits(c.i, c.n)),
        _r("Q4_K_S", "Q5_K", lambda c: c.i < 4),
    ),
    "attn_k": (
        _r(ALL, "Q8_0", lambda c: c.model.n_expert == 8),
        _r("IQ3_XS", "IQ3_XXS"),
        _r("IQ3_XXS", "IQ2_S"),
    ),
    "attn_q": (
        _r("IQ3_XS", "IQ3_XXS"),
        _r("IQ3_XXS", "IQ2_S"),
    ),
    "ffn_down": (
        _r("Q2_K", "Q3_K"),
        _r("Q2_K_S", "Q4_K", lambda c: c.i < c.n // 8),
        _r("Q2_K_S", "Q2_K"),  # ends the chain for Q2_K_S
        _r("IQ3_XXS", "Q4_K", lambda c: not c.has_imatrix and c.i < c.n // 8),
        _r("IQ3_XXS", "Q3_K", lambda c: not c.has_imatrix),
        _r("IQ3_M", "Q4_K", lambda c: c.i < c.n // 8 or (c.model.n_expert == 8 and use_more_bits(c.i, c.n))),
        _r("Q3_K_M", "Q5_K", lambda c: c.i < c.n // 16),
        _r("Q3_K_M", "Q4_K", lambda c: c.model.arch != "falcon" or use_more_bits(c.i, c.n)),
        _r("Q3_K_M", "Q3_K"),
        _r("Q3_K_L", "Q4_K", lambda c: c.model.arch == "falcon"),
        _r("Q3_K_L", "Q5_K"),
        _r("Q4_K_M", "Q6_K", lambda c: c.model.arch == "falcon" and c.i < c.n // 16),
        _r("Q4_K_M", "Q5_K", lambda c: c.model.arch == "falcon" and use_more_bits(c.i, c.n)),
        _r("Q4_K_M", "Q6_K", lambda c: c.model.arch != "falcon" and use_more_bits(c.i, c.n)),
        _r("Q4_K_M", "Q4_K"),
        _r("IQ4_NL IQ4_XS", "Q5_K", lambda c: c.i < c.n // 8 and not c.has_imatrix),
        _r("Q5_K_M", "Q6_K", lambda c: use_more_bits(c.i, c.n)),
        _r("Q4_K_S", "Q5_K", lambda c: c.model.arch != "falcon" and c.i < c.n // 8),
        _r("Q4_0", "Q4_1", lambda c: c.has_imatrix and c.i < c.n // 8),
        _r("Q5_0", "Q5_1", lambda c: c.has_imatrix and c.i < c.n // 8),
    ),
    "attn_output": (
        _r("Q2_K IQ3_XS IQ3_XXS Q3_K_S Q3_K_M IQ4_NL Q4_K_S Q4_K_M IQ3_S IQ3_M IQ4_XS", "Q5_K",
           lambda c: c.model.arch != "falcon" and c.model.n_expert == 8),
        _r(ALL, "", lambda c: c.model.arch != "falcon" and c.model.n_expert == 8),  # "" keeps the default
        _r("Q2_K", "Q3_K", lambda c: c.model.arch != "falcon"),
        _r("IQ3_XXS", "IQ3_S", lambda c: c.model.arch != "falcon"),
        _r("Q3_K_M", "Q4_K", lambda c: c.model.arch != "falcon"),
        _r("Q3_K_L", "Q5_K", lambda c: c.model.arch != "falcon"),
        _r("IQ3_M", "Q4_K", lambda c: c.model.arch != "falcon"),
        _r("Q3_K_L", "Q4_K"),
    ),
    "ffn_gate": (
        _r("IQ3_XS", "IQ3_XXS", lambda c: c.n // 8 <= c.i < 7 * c.n // 8),
    ),
    "ffn_up": (
        _r("IQ3_XS", "IQ3_XXS", lambda c: c.n // 8 <= c.i < 7 * c.n // 8),
    ),
}
_MIX = " ".join(sorted(IQ_MIXES))
IQ_MIX_RULES: dict[str, tuple[Rule, ...]] = {
    "attn_v": (
        _r(_MIX, "Q4_K", lambda c: c.model.n_gqa >= 4 or c.model.n_expert >= 4),
        _r("IQ2_S IQ2_M", "IQ3_S"),
        _r(_MIX, "Q2_K"),
    ),
    "attn_k": (
        _r(_MIX, "Q4_K", lambda c: c.model.n_expert == 8),
    ),
    "ffn_down": (
        _r("IQ2_S IQ2_M", "IQ3_S", lambda c: c.i < c.n // 8),
        _r(_MIX, "Q2_K", lambda c: c.i < c.n // 8),
    ),
    "attn_output": (
        _r(_MIX, "Q5_K", lambda c: c.model.n_expert == 8),
        _r("IQ1_S IQ1_M", "IQ2_XXS"),
        _r("IQ2_S IQ2_M", "IQ3_S"),
    ),
}
# After the attn_v rules: the 70B bump and the 8-expert rule (llama.cpp applies these to the rule's result).
ATTN_V_AFTER = (
    (lambda c, t: c.model.is_70b and t in ("Q3_K", "Q4_K"), "Q5_K"),
    (lambda c, t: c.model.n_expert == 8, "Q8_0"),
)


def rule_type(cat: str, ctx: Ctx, tied: bool) -> str:
    """llama_tensor_get_type_impl for one tensor of a quantized preset."""
    rules_cat = "output" if cat == "output" or (tied and cat == "token_embd") else cat
    rules_cat = "attn_v" if rules_cat in ATTN_V_LIKE else rules_cat
    iq_mix = ctx.preset in IQ_MIXES and rules_cat not in ("output", "token_embd")
    t = ctx.default
    for rule in (IQ_MIX_RULES if iq_mix else RULES).get(rules_cat, ()):
        if ctx.preset in rule.presets and rule.when(ctx):
            t = rule.type or t
            break
    if rules_cat == "attn_v" and not iq_mix:
        for cond, bumped in ATTN_V_AFTER:
            if cond(ctx, t):
                t = bumped
    return t


def fallback(t: str, ne0: int) -> str:
    """tensor_type_fallback: a type whose blocks tile the row."""
    if ne0 % ggml_type(t).block_size == 0:
        return t
    if t in FALLBACKS:
        t = FALLBACKS[t]
    elif ggml_type(t).block_size > 32:
        raise PresetError(f"no fallback type is defined for {t}")
    return t if ne0 % ggml_type(t).block_size == 0 else "F16"


# Types llama-quantize refuses to make without an importance matrix (tensor_requires_imatrix): the 1-3 bit IQ types,
# and Q2_K inside a Q2_K_S file. The token embedding and the output head are exempt.
NEEDS_IMATRIX = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS"})
NEEDS_IMATRIX_IN = {"Q2_K_S": frozenset({"Q2_K"})}


def requires_imatrix(name: str, t: str, preset: str) -> bool:
    if category(name) in ("token_embd", "output"):
        return False
    return t in NEEDS_IMATRIX or t in NEEDS_IMATRIX_IN.get(preset, ())


def _layer(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def llama_quantize_order(names) -> list[str]:
    """llama-quantize's tensor order: by layer (non-layer tensors first), then by name."""
    return sorted(names, key=lambda n: (_layer(n), n))


@dataclass(frozen=True)
class TensorIn:
    name: str
    shape: tuple[int, ...]  # numpy order
    type: str  # the type it has now (or would have in an F32 conversion)


def plan_types(tensors: list[TensorIn], preset: str, model: ModelFacts, overrides=(), has_imatrix=False,
               quantize_output=True) -> dict[str, str]:
    """The ggml type of every tensor for a preset, as llama-quantize would choose it."""
    preset = resolve_preset(preset)
    default = PRESETS[preset][1]
    names = llama_quantize_order([t.name for t in tensors])
    by_name = {t.name: t for t in tensors}
    cats = {n: category(n) for n in names}
    counts = {"attn_v": sum(1 for c in cats.values() if c in ATTN_V_LIKE),
              "ffn_down": model.n_layer, "ffn_gate": model.n_layer, "ffn_up": model.n_layer}
    seen = {k: 0 for k in counts}
    tied = "output.weight" not in by_name
    out = {}
    for name in names:
        t = by_name[name]
        if not allows_quantization(name, t.shape, quantize_output):
            out[name] = t.type
            continue
        new = default
        manual = next((ty for rx, ty in overrides if rx.search(name)), None)
        cat = cats[name]
        if manual is not None:
            new = manual
        elif default not in FLOAT_TYPES:
            counter = COUNTED.get(cat)
            i = seen[counter] if counter else 0
            ctx = Ctx(preset, default, t.shape[-1], i, counts[counter] if counter else 0, model, has_imatrix)
            new = rule_type(cat, ctx, tied)
            if counter:
                seen[counter] += 1
        out[name] = fallback(new, t.shape[-1])
        if not has_imatrix and requires_imatrix(name, out[name], preset):
            raise PresetError(f"{preset} needs an importance matrix ({name} would be {out[name]}): make one with "
                              f"`qconv imatrix MODEL.gguf -f TEXT` and pass it with --imatrix")
    return {t.name: out[t.name] for t in tensors}


# llama.cpp's convert_hf_to_gguf.py --outtype: its own, simpler rules (ModelBase.prepare_tensors)
CONVERTER_PRESETS = ("F32", "F16", "BF16", "Q8_0", "TQ1_0", "TQ2_0")


def converter_types(tensors: list[TensorIn], preset: str, overrides=()) -> dict[str, str]:
    """The types llama.cpp's converter gives for --outtype `preset`: 1-D tensors, norms and non-weights F32; the
    token embedding and output F16 for the ternary types; the rest the preset's type, or F16 where a row is not a
    whole number of its blocks (the converter's QuantError fallback). --tensor-type overrides come first."""
    preset = resolve_preset(preset)
    if preset not in CONVERTER_PRESETS:
        raise PresetError(f"{preset} is not one of llama.cpp's converter types ({', '.join(CONVERTER_PRESETS)})")
    default = PRESETS[preset][1]
    out = {}
    for t in tensors:
        if len(t.shape) <= 1 or t.name.endswith("_norm.weight") or not t.name.endswith(".weight"):
            out[t.name] = "F32"
            continue
        manual = next((ty for rx, ty in overrides if rx.search(t.name)), None)
        if manual is not None:
            out[t.name] = fallback(manual, t.shape[-1])
        elif default in ("TQ1_0", "TQ2_0") and category(t.name) in ("token_embd", "output"):
            out[t.name] = "F16"
        else:
            out[t.name] = default if t.shape[-1] % ggml_type(default).block_size == 0 else "F16"
    return out


def file_type(preset: str) -> int:
    return int(PRESETS[resolve_preset(preset)][0])
