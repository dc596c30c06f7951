"""Model configuration read from GGUF metadata only: one frozen dataclass, per-architecture differences as data."""
import math
from dataclasses import dataclass, field


class UnsupportedModelError(ValueError):
    """The file holds a model kvant cannot run (architecture, missing tensor or key)."""


@dataclass(frozen=True)
class ArchSpec:
    """How one architecture differs from the llama baseline."""
    rope_neox: bool                   # rotate (i, i + n_rot/2) instead of adjacent pairs
    activation: str = "silu"          # gate activation of the gated FFN (kernels.ops.ACTIVATIONS)
    embed_scale: bool = False         # embeddings multiplied by sqrt(d_model) (gemma)
    swa_pattern: int = 0              # default: every swa_pattern-th layer is global, the rest sliding-window
    swa_rope_base: float = 10000.0    # RoPE base of sliding-window layers unless {arch}.rope.freq_base_swa says


ARCHS = {
    "llama": ArchSpec(rope_neox=False),
    "qwen2": ArchSpec(rope_neox=True),
    "qwen3": ArchSpec(rope_neox=True),
    "gemma3": ArchSpec(rope_neox=True, activation="gelu", embed_scale=True, swa_pattern=6),
    "bitnet": ArchSpec(rope_neox=True),
}

# {arch}.hidden_activation (HF's hidden_act) -> kernels.ops.ACTIVATIONS; absent: the architecture's default
ACTIVATION_NAMES = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu",
                    "gelu_new": "gelu", "relu2": "relu2"}


def _key(md, arch, name, default=None):
    value = md.get(f"{arch}.{name}", default)
    if value is None:
        raise UnsupportedModelError(f"GGUF metadata lacks {arch}.{name}")
    return value


@dataclass(frozen=True)
class Config:
    arch: str
    n_layer: int
    d_model: int
    n_head: int
    n_kv_head: int
    head_dim_k: int
    head_dim_v: int
    d_ff: int
    n_vocab: int
    n_ctx_train: int
    n_rot: int
    rope_base: float
    rope_base_swa: float
    rope_scale: float                  # multiplies positions (1 / linear scaling factor)
    rms_eps: float
    sliding_window: int
    layer_is_swa: tuple
    logit_softcap: float
    activation: str
    spec: ArchSpec = field(repr=False)
    attn_scale: float = 0.0            # derived: 1/sqrt(head_dim_k)

    def __post_init__(self):
        for name in ("n_layer", "d_model", "n_head", "n_kv_head", "head_dim_k", "head_dim_v", "d_ff", "n_vocab",
                     "n_ctx_train", "n_rot"):
            if getattr(self, name) <= 0:
                raise UnsupportedModelError(f"invalid GGUF metadata: {self.arch} {name} = {getattr(self, name)}")
        if self.n_head % self.n_kv_head:
            raise UnsupportedModelError(f"invalid GGUF metadata: {self.n_head} attention heads are not a multiple of "
                                        f"{self.n_kv_head} KV heads")
        if self.n_rot % 2 or self.n_rot > self.head_dim_k:
            raise UnsupportedModelError(f"invalid GGUF metadata: rope.dimension_count {self.n_rot} for heads of "
                                        f"{self.head_dim_k}")
        if not self.rms_eps > 0 or not self.rope_base > 0:
            raise UnsupportedModelError("invalid GGUF metadata: the RMS epsilon and the RoPE base must be positive")
        object.__setattr__(self, "attn_scale", 1.0 / math.sqrt(self.head_dim_k))

    @classmethod
    def from_metadata(cls, md):
        arch = md.get("general.architecture")
        if arch not in ARCHS:
            raise UnsupportedModelError(
                f"unsupported architecture {arch!r} (supported: {', '.join(sorted(ARCHS))})")
        spec = ARCHS[arch]
        n_layer = int(_key(md, arch, "block_count"))
        d_model = int(_key(md, arch, "embedding_length"))
        n_head = _per_layer_first(_key(md, arch, "attention.head_count"))
        n_kv_head = _per_layer_first(md.get(f"{arch}.attention.head_count_kv", n_head))
        head_k = int(md.get(f"{arch}.attention.key_length", d_model // max(n_head, 1)))
        head_v = int(md.get(f"{arch}.attention.value_length", head_k))
        window = int(md.get(f"{arch}.attention.sliding_window", 0) or 0)
        scaling = md.get(f"{arch}.rope.scaling.type", "none")
        if scaling not in ("none", "linear"):
            raise UnsupportedModelError(f"RoPE scaling {scaling!r} is not supported yet")
        factor = float(md.get(f"{arch}.rope.scaling.factor", 1.0) or 1.0) if scaling == "linear" else 1.0
        return cls(
            arch=arch, n_layer=n_layer, d_model=d_model, n_head=n_head, n_kv_head=n_kv_head,
            head_dim_k=head_k, head_dim_v=head_v,
            d_ff=_per_layer_first(_key(md, arch, "feed_forward_length")),
            n_vocab=_vocab_size(md, arch),
            n_ctx_train=int(md.get(f"{arch}.context_length", 4096)),
            n_rot=int(md.get(f"{arch}.rope.dimension_count", head_k)),
            rope_base=float(md.get(f"{arch}.rope.freq_base", 10000.0)),
            rope_base_swa=float(md.get(f"{arch}.rope.freq_base_swa", spec.swa_rope_base)),
            rope_scale=1.0 / factor,
            rms_eps=float(_key(md, arch, "attention.layer_norm_rms_epsilon")),
            sliding_window=window,
            layer_is_swa=_swa_layers(md.get(f"{arch}.attention.sliding_window_pattern"), spec.swa_pattern,
                                     n_layer, window),
            logit_softcap=float(md.get(f"{arch}.final_logit_softcapping", 0.0) or 0.0),
            activation=_activation(md.get(f"{arch}.hidden_activation"), spec.activation),
            spec=spec,
        )


def _activation(name, default):
    if name is None:
        return default
    if name not in ACTIVATION_NAMES:
        raise UnsupportedModelError(f"activation {name!r} is not supported (supported: "
                                    f"{', '.join(sorted(ACTIVATION_NAMES))})")
    return ACTIVATION_NAMES[name]


def _vocab_size(md, arch):
    tokens = md.get("tokenizer.ggml.tokens")
    if tokens is not None:
        return len(tokens)
    return int(_key(md, arch, "vocab_size"))


def _per_layer_first(value):
    """Some keys may be per-layer arrays; kvant runs models whose layers agree."""
    if hasattr(value, "__len__") and not isinstance(value, str):
        values = set(int(v) for v in value)
        if len(values) != 1:
            raise UnsupportedModelError("models with per-layer head counts or FFN sizes are not supported yet")
        return values.pop()
    return int(value)


def _swa_layers(pattern, default_pattern, n_layer, window):
    """Which layers use the sliding window: an explicit per-layer array in the file, else every n-th layer global
    (llama.cpp's rule: layer i is sliding when i % n < n - 1)."""
    if window <= 0:
        return (False,) * n_layer
    if pattern is not None and hasattr(pattern, "__len__"):
        if len(pattern) != n_layer:
            raise UnsupportedModelError(f"sliding_window_pattern has {len(pattern)} entries for {n_layer} layers")
        return tuple(bool(p) for p in pattern)
    n = int(pattern) if pattern is not None else default_pattern
    if n <= 0:
        return (True,) * n_layer
    return tuple(i % n < n - 1 for i in range(n_layer))


def expected_shapes(cfg: Config) -> dict:
    """The shape (numpy order: rows, row length) every tensor must have for this configuration, by name suffix
    ("blk.N." removed), as llama.cpp's loader checks them: a file whose metadata disagrees with its tensors is
    refused before any kernel reads past a row."""
    d, ff = cfg.d_model, cfg.d_ff
    q, k, v = cfg.n_head * cfg.head_dim_k, cfg.n_kv_head * cfg.head_dim_k, cfg.n_kv_head * cfg.head_dim_v
    att = cfg.n_head * cfg.head_dim_v
    return {
        "token_embd.weight": (cfg.n_vocab, d), "output.weight": (cfg.n_vocab, d), "output_norm.weight": (d,),
        "attn_norm.weight": (d,), "attn_q.weight": (q, d), "attn_k.weight": (k, d), "attn_v.weight": (v, d),
        "attn_output.weight": (d, att), "attn_q.bias": (q,), "attn_k.bias": (k,), "attn_v.bias": (v,),
        "attn_output.bias": (d,), "attn_q_norm.weight": (cfg.head_dim_k,), "attn_k_norm.weight": (cfg.head_dim_k,),
        "attn_sub_norm.weight": (att,), "post_attention_norm.weight": (d,), "ffn_norm.weight": (d,),
        "ffn_gate.weight": (ff, d), "ffn_up.weight": (ff, d), "ffn_down.weight": (d, ff),
        "ffn_sub_norm.weight": (ff,), "post_ffw_norm.weight": (d,),
    }


def _suffix(name):
    return name.split(".", 2)[2] if name.startswith("blk.") else name


def check_shapes(shapes: dict, cfg: Config) -> None:
    """Every tensor (name -> shape, numpy order) the model reads has the shape its metadata implies."""
    expected = expected_shapes(cfg)
    for name, shape in shapes.items():
        want = expected.get(_suffix(name))
        if want is not None and tuple(shape) != want:
            raise UnsupportedModelError(
                f"tensor {name} has shape {_ne(shape)}, but the {cfg.arch}.* metadata implies {_ne(want)}")


def _ne(shape):
    """A shape as llama.cpp prints it (ne order: row length first)."""
    return "[" + ", ".join(str(n) for n in reversed(shape)) + "]"
