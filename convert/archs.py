"""Architectures as data: one table per Hugging Face architecture, saying how its checkpoint becomes GGUF.

Each Arch gives
  gguf_arch    the GGUF architecture (general.architecture, the {arch}.* key prefix, gguf.TensorNameMap's table)
  defaults     transformers' config defaults for keys a config.json may leave out (llama.cpp's converter reads the
               config through transformers' AutoConfig, so these are the values it sees)
  names        HF tensor names gguf.TensorNameMap lacks (templates with {bid})
  skip         HF tensor names that are not converted
  transforms   (HF-name regex, transform) pairs applied to the tensor data, in order
  params       arch-specific metadata, written after the common keys (llama.cpp's set_gguf_parameters)
  vocab        tokenizer kinds in order of preference (see kvant.convert.vocab.write_vocab)
The runtime never sees HF names: every rename and permutation happens here.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import gguf
import numpy as np

from .hf import HFModel, ModelDirError


class UnsupportedArchitectureError(ModelDirError):
    """An architecture kvant has no table for (named in the message)."""


# ---------------------------------------------------------------- tensor transforms
# The pipeline hands a transform the tensor in slabs of consecutive whole rows (first axis; a 1-D tensor is one
# slab), so that a big tensor is never converted as a whole float32 copy. Every transform is row-local once its
# argument is known; what cannot be seen in one slab (the head size, a whole-tensor statistic) is that argument.
def q_head_rows(m: HFModel, shape, slabs=None) -> int:
    return shape[0] // int(m.config["num_attention_heads"])


def k_head_rows(m: HFModel, shape, slabs=None) -> int:
    return shape[0] // int(m.config["num_key_value_heads"])


def permute_heads(w: np.ndarray, head_rows: int) -> np.ndarray:
    """HF's rotate-half q/k layout -> llama.cpp's interleaved pairs (NORM rope): per head of head_rows rows,
    rows (2, d/2) -> (d/2, 2). w holds whole heads."""
    return w.reshape(-1, 2, head_rows // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add_one(w: np.ndarray, _=None) -> np.ndarray:
    """Gemma's RMSNorm multiplies by (1 + weight): llama.cpp stores 1 + weight."""
    return w + w.dtype.type(1)


def ternary_scale(m: HFModel | None, shape, slabs: Callable) -> np.float32 | None:
    """BitNet b1.58's absmean scale s = mean |W| (llama.cpp's BitnetModel.weight_quant), measured over the slabs
    of the tensor; None if the tensor is already ternary (every value 0 or +-a for one a, as a checkpoint exported
    with its scales folded in is): re-applying the absmean rule to it would shrink it by its fraction of non-zeros
    (llama.cpp's converter does shrink it; see convert/README.md).

    The mean is taken in float64 (torch's float32 summation order can move the scale by an ulp): the correctly
    rounded sum (math.fsum) of the rows' float64 sums, which does not depend on how the rows are split into slabs."""
    row_sums, peaks, n, ternary = [], set(), 0, True
    for w in slabs():
        a = np.abs(w.astype(np.float32, copy=False))
        if a.size == 0:
            continue
        peak = a.max()
        ternary = ternary and bool(np.all((a == peak) | (a == 0)))
        peaks.add(float(peak))
        row_sums.append(a.astype(np.float64).reshape(len(a) if a.ndim > 1 else 1, -1).sum(axis=1))
        n += a.size
    if ternary and len(peaks - {0.0}) <= 1:
        return None
    mean = math.fsum(np.concatenate(row_sums)) / n
    return np.float32(max(np.float32(mean), np.float32(1e-5)))


def apply_ternary(w: np.ndarray, scale: np.float32 | None) -> np.ndarray:
    """W -> round(W / s) clamped to [-1, 1], times s, in float32 and back to W's dtype (None: W as it is)."""
    if scale is None:
        return w
    iscale = np.float32(1) / scale
    return (np.clip(np.round(w.astype(np.float32) * iscale), -1, 1) / iscale).astype(w.dtype)


def ternarize(w: np.ndarray) -> np.ndarray:
    """A whole tensor through BitNet's ternarisation (ternary_scale, apply_ternary)."""
    return apply_ternary(w, ternary_scale(None, w.shape, lambda: iter((w,))))


@dataclass(frozen=True)
class Transform:
    """A change to the data of the tensors whose HF name matches `pattern`, applied slab by slab:
    fn(rows, arg) -> rows, with arg = prepare(model, shape, slabs) computed once per tensor (None without prepare;
    slabs() iterates the tensor's slabs as fn will receive them, for a whole-tensor statistic). Each slab starts at
    a multiple of group(model, shape) rows and holds a multiple of them (1 without group)."""
    pattern: str  # regex searched in the HF tensor name
    fn: Callable[[np.ndarray, object], np.ndarray]
    prepare: Callable | None = None
    group: Callable | None = None


# ---------------------------------------------------------------- metadata
def common_params(w: gguf.GGUFWriter, m: HFModel, file_type: int) -> None:
    """llama.cpp's TextModel.set_gguf_parameters: the keys every text model gets."""
    find = m.find
    w.add_block_count(int(find(("n_layers", "num_hidden_layers", "n_layer", "num_layers"))))
    optional = (
        (("max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length",
          "model_max_length"), w.add_context_length),
        (("hidden_size", "n_embd", "dim"), w.add_embedding_length),
        (("prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size", "n_inner",
          "hidden_dim"), w.add_feed_forward_length),
        (("num_attention_heads", "n_head", "n_heads"), w.add_head_count),
        (("num_key_value_heads", "n_kv_heads"), w.add_head_count_kv),
    )
    for keys, add in optional:
        if (v := find(keys, None)) is not None:
            add(v)
    if m.config.get("is_causal") is False:
        w.add_causal_attention(False)
    rope = m.rope.get("full_attention", m.rope)
    rope_type, factor = rope.get("rope_type"), rope.get("factor")
    if rope_type == "linear" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(factor)
    elif rope_type == "yarn" and factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(factor)
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        for key, add in (("extrapolation_factor", w.add_rope_scaling_yarn_ext_factor),
                         ("beta_fast", w.add_rope_scaling_yarn_beta_fast),
                         ("beta_slow", w.add_rope_scaling_yarn_beta_slow)):
            if rope.get(key) is not None:
                add(rope[key])
        attn = rope.get("attention_factor", rope.get("attn_factor"))
        if attn is not None:
            w.add_rope_scaling_yarn_attn_factor(attn)
    elif rope_type in ("su", "longrope"):
        w.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
    if rope.get("rope_theta") is not None:
        w.add_rope_freq_base(rope["rope_theta"])
    if (swa_theta := m.rope.get("sliding_attention", {}).get("rope_theta")) is not None:
        w.add_rope_freq_base_swa(swa_theta)
    if (eps := find(("rms_norm_eps", "norm_eps"), None)) is not None:
        w.add_layer_norm_rms_eps(eps)
    if (eps := find(("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"), None)) is not None:
        w.add_layer_norm_eps(eps)
    if m.config.get("head_dim") is not None:
        w.add_key_length(m.config["head_dim"])
        w.add_value_length(m.config["head_dim"])
    w.add_file_type(file_type)


def llama_params(w, m: HFModel) -> None:
    w.add_vocab_size(m.config["vocab_size"])
    w.add_rope_dimension_count(m.config.get("head_dim") or m.config["hidden_size"] // m.config["num_attention_heads"])


def gemma3_params(w, m: HFModel) -> None:
    c = m.config
    w.add_context_length(c.get("max_position_embeddings", 131072))
    w.add_head_count(c.get("num_attention_heads", 8))
    w.add_layer_norm_rms_eps(c.get("rms_norm_eps", 1e-6))
    w.add_key_length(c.get("head_dim", 256))
    w.add_value_length(c.get("head_dim", 256))
    w.add_rope_freq_base(m.rope.get("full_attention", m.rope).get("rope_theta", 1_000_000.0))
    if c.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(c["final_logit_softcapping"])
    if c.get("sliding_window_pattern") != 1:
        w.add_sliding_window(c["sliding_window"])
    w.add_head_count_kv(c.get("num_key_value_heads", 4))
    # kvant writes the per-layer pattern, which llama.cpp's loader reads (load_swa_pattern: an array of bools,
    # true = sliding) but its converter leaves out, assuming the 5-sliding-1-global pattern of released Gemma 3s.
    if c.get("layer_types") and c.get("sliding_window_pattern") != 1:
        w.add_sliding_window_pattern([t == "sliding_attention" for t in c["layer_types"]])


HIDDEN_ACT_KEY = "{arch}.hidden_activation"  # llama.cpp's LLM_KV_HIDDEN_ACT (not in the gguf package's Keys yet)


def bitnet_params(w, m: HFModel) -> None:
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(1.0)
    # {arch}.hidden_activation is a key llama.cpp knows (LLM_KV_HIDDEN_ACT, read by some archs) but its bitnet
    # loader ignores: its bitnet graph always uses SiLU. transformers' BitNet uses relu2 (squared ReLU).
    # kvant's runtime reads this key; see convert/README.md for the conflict.
    act = m.config.get("hidden_act")
    if act:
        w.add_string(HIDDEN_ACT_KEY.format(arch=w.arch), act)


def llama_before_vocab(w, m: HFModel) -> None:
    """llama.cpp's LlamaModel.set_vocab writes tokenizer_config.json's add_prefix_space ahead of the vocabulary."""
    flag = (m.tokenizer_config or {}).get("add_prefix_space")
    if flag is not None:
        w.add_add_space_prefix(flag)


def llama_after_vocab(w, m: HFModel, kind: str) -> None:
    """LlamaModel.set_vocab's two vocabulary-size quirks: CodeLlama's EOT (32016 tokens) and no BOS for the
    49152-token vocabularies (granite small models; SmolLM shares the size)."""
    n_vocab = m.config.get("vocab_size", 32000)
    if n_vocab == 32016:
        w.add_eot_token_id(32010)
    if n_vocab == 49152:
        w.add_add_bos_token(False)


def gemma3_layer_types(c: dict) -> list[str]:
    n = c.get("sliding_window_pattern", c.get("_sliding_window_pattern", 6))
    return ["sliding_attention" if (i + 1) % n else "full_attention" for i in range(c["num_hidden_layers"])]


def derived_head_dim(c: dict) -> int:
    return c["hidden_size"] // c["num_attention_heads"]


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class Arch:
    gguf_arch: gguf.MODEL_ARCH
    defaults: dict = field(default_factory=dict)  # values, or callables of the config for derived values
    names: dict = field(default_factory=dict)
    skip: tuple = ()
    transforms: tuple = ()
    params: Callable | None = None
    vocab: tuple = ("llama", "gpt2")
    before_vocab: Callable | None = None  # (writer, model): keys llama.cpp writes ahead of the vocabulary
    after_vocab: Callable | None = None  # (writer, model, kind written)

    @property
    def name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]


_GQA_DEFAULT = {"num_key_value_heads": lambda c: c["num_attention_heads"]}
LLAMA = Arch(
    gguf.MODEL_ARCH.LLAMA,
    defaults={**_GQA_DEFAULT, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
              "head_dim": derived_head_dim, "rope_theta": 10000.0},
    transforms=(Transform(r"q_proj\.(weight|bias)$", permute_heads, prepare=q_head_rows, group=q_head_rows),
                Transform(r"k_proj\.(weight|bias)$", permute_heads, prepare=k_head_rows, group=k_head_rows)),
    params=llama_params, before_vocab=llama_before_vocab, after_vocab=llama_after_vocab,
)
MISTRAL = Arch(
    gguf.MODEL_ARCH.LLAMA,
    defaults={**LLAMA.defaults, "num_key_value_heads": 8, "max_position_embeddings": 131072},
    transforms=LLAMA.transforms, params=llama_params, before_vocab=llama_before_vocab,
    after_vocab=llama_after_vocab,
)
QWEN2 = Arch(
    gguf.MODEL_ARCH.QWEN2,
    defaults={**_GQA_DEFAULT, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
              "rope_theta": 10000.0},
)
QWEN3 = Arch(
    gguf.MODEL_ARCH.QWEN3,
    defaults={**QWEN2.defaults, "head_dim": 128},
)
GEMMA3 = Arch(
    gguf.MODEL_ARCH.GEMMA3,
    defaults={"num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": True, "sliding_window": 4096, "layer_types": gemma3_layer_types,
              "rope_theta": 1_000_000.0, "rope_local_base_freq": 10000.0},
    skip=(r"^lm_head\.weight$",),
    transforms=(Transform(r"norm\.weight$", add_one),),
    params=gemma3_params,
    after_vocab=lambda w, m, kind: w.add_add_space_prefix(False) if kind == "llama" else None,
)
_BITNET_PROJ = r"(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$"
BITNET = Arch(
    gguf.MODEL_ARCH.BITNET,
    defaults={**_GQA_DEFAULT, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
              "rope_theta": 500000.0, "hidden_act": "relu2"},
    names={"model.layers.{bid}.self_attn.attn_sub_norm": "blk.{bid}.attn_sub_norm",
           "model.layers.{bid}.mlp.ffn_sub_norm": "blk.{bid}.ffn_sub_norm"},
    transforms=(Transform(_BITNET_PROJ, apply_ternary, prepare=ternary_scale),),
    params=bitnet_params,
)

ARCHITECTURES: dict[str, Arch] = {
    "LlamaForCausalLM": LLAMA,
    "MistralForCausalLM": MISTRAL,
    "Qwen2ForCausalLM": QWEN2,
    "Qwen3ForCausalLM": QWEN3,
    "Gemma3ForCausalLM": GEMMA3,
    "BitNetForCausalLM": BITNET,
    "BitnetForCausalLM": BITNET,
}
# Tensors no architecture converts (llama.cpp's converter drops them too).
ALWAYS_SKIP = (r"\.attention\.masked_bias$", r"\.attention\.bias$", r"\.rotary_emb\.inv_freq$")


def check_architecture(name: str) -> Arch:
    arch = ARCHITECTURES.get(name)
    if arch is None:
        supported = sorted(set(ARCHITECTURES) - {"BitnetForCausalLM"})
        raise UnsupportedArchitectureError(f"unsupported architecture {name!r} (supported: {', '.join(supported)})")
    return arch


def apply_defaults(arch: Arch, config: dict) -> dict:
    """config.json with transformers' defaults for what it leaves out (derived values computed from the rest)."""
    c = dict(config)
    for key, value in arch.defaults.items():
        if c.get(key) is None:
            if callable(value):
                try:
                    c[key] = value(c)
                except KeyError as e:
                    raise ModelDirError(f"config.json lacks {e.args[0]!r}") from None
            else:
                c[key] = value
    return c


# ---------------------------------------------------------------- tensor names
class NameMap:
    """HF tensor name -> GGUF tensor name for one model (gguf.TensorNameMap plus the arch's own names)."""

    def __init__(self, arch: Arch, n_layer: int):
        self.arch = arch
        self.map = gguf.get_tensor_name_map(arch.gguf_arch, n_layer)
        self.extra = {}
        for hf, gg in arch.names.items():
            for bid in range(n_layer):
                self.extra[hf.format(bid=bid)] = gg.format(bid=bid)

    def gguf_name(self, hf_name: str) -> str | None:
        for suffix in (".weight", ".bias"):
            if hf_name.endswith(suffix) and hf_name[:-len(suffix)] in self.extra:
                return self.extra[hf_name[:-len(suffix)]] + suffix
        return self.map.get_name(hf_name, try_suffixes=(".weight", ".bias"))


def skipped(arch: Arch, hf_name: str) -> bool:
    return any(re.search(p, hf_name) for p in ALWAYS_SKIP + arch.skip)


def transforms_for(arch: Arch, hf_name: str) -> list[Transform]:
    return [t for t in arch.transforms if re.search(t.pattern, hf_name)]


# ---------------------------------------------------------------- generated tensors
def llama3_rope_factors(m: HFModel) -> np.ndarray | None:
    """rope_freqs.weight for rope_type llama3 (Llama 3.1+): per-frequency divisors, as llama.cpp's converter makes."""
    rope = m.rope.get("full_attention", m.rope)
    if str(rope.get("rope_type", "")).lower() != "llama3":
        return None
    base = rope.get("rope_theta", 10000.0)
    dim = m.config.get("head_dim") or derived_head_dim(m.config)
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:  # float32 throughout, as the converter's torch arithmetic is
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)
