"""The transformer: weights as kernel-ready views of the GGUF file, a KV cache, prefill and decode.

One forward pass serves every supported architecture; the differences are Config fields and which optional tensors
the file holds (biases, q/k norms, post-norms, sub-norms).
"""
from dataclasses import dataclass

import numpy as np

from kvant.formats.dequant import RowReader, dequantize
from kvant.runtime import kernels
from kvant.runtime.config import Config, UnsupportedModelError, check_shapes
from kvant.runtime.decode import ABSENT, LayerConsts, LayerMats, LayerStep, LayerVecs, step_buffers
from kvant.runtime.kernels import ops
from kvant.runtime.kernels.actquant import VEC_DOT
from kvant.runtime.kernels._attn import attention_prefill
from kvant.runtime.kernels._gemm import quantize

# Per-layer tensors: field -> (GGUF name under blk.{i}., required). Matrices become QMatrix, vectors float32.
LAYER_TENSORS = {
    "attn_norm": ("attn_norm.weight", True),
    "wq": ("attn_q.weight", True),
    "wk": ("attn_k.weight", True),
    "wv": ("attn_v.weight", True),
    "wo": ("attn_output.weight", True),
    "bq": ("attn_q.bias", False),
    "bk": ("attn_k.bias", False),
    "bv": ("attn_v.bias", False),
    "bo": ("attn_output.bias", False),
    "q_norm": ("attn_q_norm.weight", False),
    "k_norm": ("attn_k_norm.weight", False),
    "attn_sub_norm": ("attn_sub_norm.weight", False),
    "attn_post_norm": ("post_attention_norm.weight", False),
    "ffn_norm": ("ffn_norm.weight", True),
    "w_gate": ("ffn_gate.weight", True),
    "w_up": ("ffn_up.weight", True),
    "w_down": ("ffn_down.weight", True),
    "ffn_sub_norm": ("ffn_sub_norm.weight", False),
    "ffn_post_norm": ("post_ffw_norm.weight", False),
}
MATRICES = {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"}
# Matrices that read the same input, multiplied as one stacked matrix when they share a type (one kernel call
# instead of several: a parallel call costs microseconds, and the small k/v matrices split badly over threads).
STACKS = {"wqkv": ("wq", "wk", "wv"), "w_gate_up": ("w_gate", "w_up")}


@dataclass
class Layer:
    attn_norm: np.ndarray
    wo: object
    wq: object = None
    wk: object = None
    wv: object = None
    bq: np.ndarray = None
    bk: np.ndarray = None
    bv: np.ndarray = None
    bo: np.ndarray = None
    q_norm: np.ndarray = None
    k_norm: np.ndarray = None
    attn_sub_norm: np.ndarray = None
    attn_post_norm: np.ndarray = None
    ffn_norm: np.ndarray = None
    w_gate: object = None
    w_up: object = None
    w_down: object = None
    ffn_sub_norm: np.ndarray = None
    ffn_post_norm: np.ndarray = None
    wqkv: object = None         # wq, wk, wv stacked (then those three are None)
    w_gate_up: object = None    # w_gate, w_up stacked (likewise)


class KVCache:
    """Keys and values of every layer, (n_kv_head, n_ctx, head_dim) per layer: f16 (as uint16 bits, llama.cpp's
    default) or f32 (llama.cpp's -ctk/-ctv f32). np.zeros maps pages lazily, so memory grows with use."""

    def __init__(self, cfg: Config, n_ctx: int, kv_type: str = "f16"):
        dtype = self.check_type(kv_type)
        need = self.bytes_needed(cfg, n_ctx, kv_type)
        free = _available_memory()
        if free is not None and need > free:
            raise MemoryError(f"a {n_ctx}-token context needs {need / 2**30:.1f} GiB of KV cache ({kv_type}); this "
                              f"machine has {free / 2**30:.1f} GiB available (a smaller -c / n_ctx fits)")
        self.n_ctx = n_ctx
        self.kv_type = kv_type
        self.k = [np.zeros((cfg.n_kv_head, n_ctx, cfg.head_dim_k), dtype) for _ in range(cfg.n_layer)]
        self.v = [np.zeros((cfg.n_kv_head, n_ctx, cfg.head_dim_v), dtype) for _ in range(cfg.n_layer)]

    @staticmethod
    def bytes_needed(cfg: Config, n_ctx: int, kv_type: str) -> int:
        item = np.dtype(KVCache.check_type(kv_type)).itemsize
        return cfg.n_layer * cfg.n_kv_head * n_ctx * (cfg.head_dim_k + cfg.head_dim_v) * item

    @staticmethod
    def check_type(kv_type):
        if kv_type not in ops.KV_TYPES:
            raise ValueError(f"unknown KV cache type {kv_type!r} (known: {', '.join(ops.KV_TYPES)})")
        return ops.KV_TYPES[kv_type]

    @property
    def nbytes(self):
        return sum(a.nbytes for a in self.k) + sum(a.nbytes for a in self.v)


def _available_memory():
    """MemAvailable of /proc/meminfo in bytes, or None where there is none."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_weights(gguf, cfg: Config):
    """Every tensor the model needs is in the file, with a type the kernels can run; raises before anything is
    loaded or compiled."""
    names = ["token_embd.weight", "output_norm.weight"]
    for i in range(cfg.n_layer):
        names += [f"blk.{i}.{suffix}" for suffix, required in LAYER_TENSORS.values() if required]
    for name in names:
        if name not in gguf.tensors:
            raise UnsupportedModelError(f"tensor {name} is missing from the file")
    check_shapes({name: info.shape for name, info in gguf.tensors.items()}, cfg)
    for name, info in gguf.tensors.items():
        is_matrix = len(info.shape) == 2 and name != "token_embd.weight" or name == "output.weight"
        if is_matrix and info.ggml_type.name not in kernels.SUPPORTED_TYPES:
            raise kernels.UnsupportedTypeError(f"type {info.ggml_type.name} not supported yet (tensor {name})")
    if "output.weight" not in gguf.tensors:
        embd = gguf.tensors["token_embd.weight"].ggml_type.name
        if embd not in kernels.SUPPORTED_TYPES:
            raise kernels.UnsupportedTypeError(f"type {embd} not supported yet (tensor token_embd.weight)")


class Transformer:
    """Weights of one GGUF model, ready for the kernels, and the forward pass."""

    def __init__(self, gguf, cfg: Config):
        self.cfg = cfg
        self.file = gguf
        self.weight_bytes = 0
        self.matrix_names = {}      # id(QMatrix) -> the tensor names it holds (several when stacked), for observers
        self.observer = None        # observer(tensor_name, x): sees the float input of every matmul (imatrix)
        self.layers = [self._load_layer(i) for i in range(cfg.n_layer)]
        self.output_norm = self._vector("output_norm.weight")
        embd = self._info("token_embd.weight")
        self.embd_rows = RowReader(gguf.raw("token_embd.weight"), embd.ggml_type)
        out_name = "output.weight" if "output.weight" in gguf.tensors else "token_embd.weight"
        self.output = self._matrix(out_name)
        self.embed_scale = np.float32(np.sqrt(np.float32(cfg.d_model))) if cfg.spec.embed_scale else None
        self._rope = {}
        self._steps = None          # per-layer decode steps (decode.LayerStep), made at the first decoded token

    # -- loading ---------------------------------------------------------------------------------------------
    def _info(self, name):
        info = self.file.tensors.get(name)
        if info is None:
            raise UnsupportedModelError(f"tensor {name} is missing from the file")
        return info

    def _vector(self, name):
        info = self._info(name)
        return np.ascontiguousarray(dequantize(self.file.raw(name), info.ggml_type).reshape(-1))

    def _matrix(self, name):
        return self._matrices([name])

    def _matrices(self, names):
        """One QMatrix for the named tensors (of one type) stacked by rows."""
        raws = [self.file.raw(name) for name in names]
        ggml_type = self._info(names[0]).ggml_type
        matrix = kernels.prepare(raws[0], ggml_type) if len(raws) == 1 else kernels.prepare_stacked(raws, ggml_type)
        self.matrix_names[id(matrix)] = names
        self.weight_bytes += matrix.nbytes
        for name, raw in zip(names, raws):
            if not any(np.shares_memory(a, raw) for a in matrix.arrays):
                self.file.release(name)     # repacked: the mapped pages would only double the resident memory
        return matrix

    def _load_layer(self, i):
        names = {}
        fields = {}
        for field, (suffix, required) in LAYER_TENSORS.items():
            name = f"blk.{i}.{suffix}"
            if name not in self.file.tensors:
                if required:
                    raise UnsupportedModelError(f"tensor {name} is missing from the file")
                continue
            names[field] = name
        for stack, parts in STACKS.items():
            if len({self.file.tensors[names[p]].ggml_type.name for p in parts}) == 1:
                fields[stack] = self._matrices([names[p] for p in parts])
                for p in parts:
                    del names[p]
        for field, name in names.items():
            fields[field] = self._matrix(name) if field in MATRICES else self._vector(name)
        return Layer(**fields)

    def rope_tables(self, is_swa, n_ctx):
        base = self.cfg.rope_base_swa if is_swa else self.cfg.rope_base
        key = (base, n_ctx)
        if key not in self._rope:
            factors = None
            if "rope_freqs.weight" in self.file.tensors:
                factors = self._vector("rope_freqs.weight")
            self._rope[key] = ops.rope_tables(n_ctx, self.cfg.n_rot, base, self.cfg.rope_scale, factors)
        return self._rope[key]

    # -- forward -------------------------------------------------------------------------------------------------
    def _linear(self, out, matrix, inputs, bias=None):
        if self.observer is not None:
            for name in self.matrix_names[id(matrix)]:
                self.observer(name, inputs.x)
        _linear(out, matrix, inputs, bias)

    def _linear_parts(self, outs, stacked, parts, inputs, biases):
        """outs[j] = parts[j] @ x (+ biases[j]), through the stacked matrix when the layer has one."""
        if stacked is None:
            for out, matrix, bias in zip(outs, parts, biases):
                self._linear(out, matrix, inputs, bias)
            return
        joined = np.empty((outs[0].shape[0], stacked.shape[0]), np.float32)
        self._linear(joined, stacked, inputs)
        col = 0
        for out, bias in zip(outs, biases):
            out[:] = joined[:, col:col + out.shape[1]]
            col += out.shape[1]
            if bias is not None:
                out += bias

    def embed(self, tokens):
        x = self.embd_rows(tokens)
        if self.embed_scale is not None:
            x *= self.embed_scale
        return x

    def forward(self, tokens, start, cache: KVCache, logits_from=None, states=None, from_layer=0, hidden=False):
        """Run tokens at positions start.. through every layer, writing their keys and values into the cache.
        Returns logits (rows from logits_from to the end; default: only the last token) as float32 (m, n_vocab).
        states: a list that gets the hidden states entering each layer (and the last one's output); from_layer > 0
        starts there from states[from_layer] instead of the embeddings (the layers before it are not run and their
        cache is left as it is): for measuring a change to one layer's weights. hidden: return the final norm's
        output for every token instead of logits (what embeddings pool)."""
        cfg = self.cfg
        n = len(tokens)
        if start + n > cache.n_ctx:
            raise ContextFullError(f"context full: {start + n} tokens do not fit in n_ctx={cache.n_ctx}")
        if n == 1 and self.observer is None and states is None and not hidden:
            return self._decode(tokens[0], start, cache)
        x = self.embed(tokens) if from_layer == 0 else states[from_layer].copy()
        record = states is not None and from_layer == 0
        positions = np.arange(start, start + n, dtype=np.int64)
        h = np.empty_like(x)
        q = np.empty((n, cfg.n_head * cfg.head_dim_k), np.float32)
        k = np.empty((n, cfg.n_kv_head * cfg.head_dim_k), np.float32)
        v = np.empty((n, cfg.n_kv_head * cfg.head_dim_v), np.float32)
        att = np.empty((n, cfg.n_head * cfg.head_dim_v), np.float32)
        gate = np.empty((n, cfg.d_ff), np.float32)
        up = np.empty((n, cfg.d_ff), np.float32)
        act = ops.ACTIVATIONS[cfg.activation]
        attention = ops.attention if n < kernels.SMALL_BATCH else attention_prefill     # one query: decode's
        for i in range(from_layer, cfg.n_layer):
            layer = self.layers[i]
            if record:
                states.append(x.copy())
            is_swa = cfg.layer_is_swa[i]
            ops.rmsnorm(h, x, layer.attn_norm, cfg.rms_eps)
            self._linear_parts((q, k, v), layer.wqkv, (layer.wq, layer.wk, layer.wv), Inputs(h),
                               (layer.bq, layer.bk, layer.bv))
            q3 = q.reshape(n, cfg.n_head, cfg.head_dim_k)
            k3 = k.reshape(n, cfg.n_kv_head, cfg.head_dim_k)
            if layer.q_norm is not None:
                ops.rmsnorm_heads(q3, layer.q_norm, cfg.rms_eps)
            if layer.k_norm is not None:
                ops.rmsnorm_heads(k3, layer.k_norm, cfg.rms_eps)
            cos, sin = self.rope_tables(is_swa, cache.n_ctx)
            ops.rope(q3, positions, cos, sin, cfg.n_rot, cfg.spec.rope_neox)
            ops.rope(k3, positions, cos, sin, cfg.n_rot, cfg.spec.rope_neox)
            ops.store_kv(cache.k[i], start, k3)
            ops.store_kv(cache.v[i], start, v.reshape(n, cfg.n_kv_head, cfg.head_dim_v))
            attention(att.reshape(n, cfg.n_head, cfg.head_dim_v), q3, cache.k[i], cache.v[i], start,
                      np.float32(cfg.attn_scale), cfg.sliding_window if is_swa else 0, np.float32(0.0))
            if layer.attn_sub_norm is not None:
                ops.rmsnorm(att, att, layer.attn_sub_norm, cfg.rms_eps)
            self._linear(h, layer.wo, Inputs(att), layer.bo)
            if layer.attn_post_norm is not None:
                ops.rmsnorm(h, h, layer.attn_post_norm, cfg.rms_eps)
            x += h
            ops.rmsnorm(h, x, layer.ffn_norm, cfg.rms_eps)
            self._linear_parts((gate, up), layer.w_gate_up, (layer.w_gate, layer.w_up), Inputs(h), (None, None))
            act(gate, up)
            if layer.ffn_sub_norm is not None:
                ops.rmsnorm(gate, gate, layer.ffn_sub_norm, cfg.rms_eps)
            self._linear(h, layer.w_down, Inputs(gate))
            if layer.ffn_post_norm is not None:
                ops.rmsnorm(h, h, layer.ffn_post_norm, cfg.rms_eps)
            x += h
        if record:
            states.append(x.copy())
        if hidden:
            ops.rmsnorm(h, x, self.output_norm, cfg.rms_eps)
            return h
        return self._logits(x[n - 1:] if logits_from is None else x[logits_from:])

    def _logits(self, rows):
        normed = np.empty_like(rows)
        ops.rmsnorm(normed, rows, self.output_norm, self.cfg.rms_eps)
        logits = np.empty((rows.shape[0], self.output.shape[0]), np.float32)
        self._linear(logits, self.output, Inputs(normed))
        if self.cfg.logit_softcap > 0:
            np.tanh(logits / self.cfg.logit_softcap, out=logits)
            logits *= self.cfg.logit_softcap
        return logits

    # -- one token, one numba call per layer (decode.py) ----------------------------------------------------------
    def prepare_decode(self, cache: KVCache):
        """Load (or compile) the decode step of every layer now, so the first generated token does not wait for it."""
        x = np.zeros(self.cfg.d_model, np.float32)
        for i, step in enumerate(self._decode_steps()):
            step.prepare(x, 0, cache.k[i], cache.v[i], *self.rope_tables(self.cfg.layer_is_swa[i], cache.n_ctx),
                         self._step_bufs)

    def _decode_steps(self):
        if self._steps is None:
            cfg = self.cfg
            self._steps = [self._layer_step(i, layer) for i, layer in enumerate(self.layers)]
            nq, nk = cfg.n_head * cfg.head_dim_k, cfg.n_kv_head * cfg.head_dim_k
            nv, natt = cfg.n_kv_head * cfg.head_dim_v, cfg.n_head * cfg.head_dim_v
            self._step_bufs = step_buffers(cfg.d_model, nq + nk + nv, natt, cfg.d_ff)
        return self._steps

    def _decode(self, token, pos, cache: KVCache):
        x = self.embed([token])
        for i, step in enumerate(self._decode_steps()):
            cos, sin = self.rope_tables(self.cfg.layer_is_swa[i], cache.n_ctx)
            step(x[0], pos, cache.k[i], cache.v[i], cos, sin, self._step_bufs)
        return self._logits(x)

    def _layer_step(self, i, layer):
        cfg = self.cfg
        groups = ((layer.wqkv, (layer.wq, layer.wk, layer.wv)), (None, (layer.wo,)),
                  (layer.w_gate_up, (layer.w_gate, layer.w_up)), (None, (layer.w_down,)))
        mats = []
        for stacked, parts in groups:
            if stacked is not None:
                mats += [stacked] + [None] * (len(parts) - 1)
            else:
                mats += parts
        kinds = [ABSENT if m is None else m.kernel_key for m in mats]
        args = LayerMats(*(() if m is None else m.kernel_args for m in mats))
        vecs = LayerVecs(*(getattr(layer, name) for name in LayerVecs._fields))
        consts = LayerConsts(eps=cfg.rms_eps, n_head=cfg.n_head, n_kv_head=cfg.n_kv_head, dk=cfg.head_dim_k,
                             dv=cfg.head_dim_v, rows_q=mats[0].shape[0], rows_gate=mats[4].shape[0], n_rot=cfg.n_rot,
                             neox=cfg.spec.rope_neox, scale=np.float32(cfg.attn_scale),
                             window=cfg.sliding_window if cfg.layer_is_swa[i] else 0)
        return LayerStep(kinds, cfg.activation, args, vecs, consts)


class ContextFullError(RuntimeError):
    """The KV cache has no room for more tokens."""


class Inputs:
    """One activation matrix as each weight type's dot product sees it (kernels.actquant): rounded once per
    scheme and shared by the matrices that read it (q/k/v, gate/up)."""
    __slots__ = ("x", "_rounded", "_codes")

    def __init__(self, x):
        self.x = x
        self._rounded = {}
        self._codes = {}

    def codes(self, scheme):
        """x quantized for the integer GEMMs (kernels._gemm): int8 codes, block scales and sums, once per scheme."""
        if scheme not in self._codes:
            self._codes[scheme] = quantize(self.x, scheme)
        return self._codes[scheme]

    def for_type(self, type_name):
        scheme = VEC_DOT.get(type_name)
        if scheme is None:
            return self.x
        if scheme not in self._rounded:
            out = np.empty_like(self.x)
            scheme(out, self.x)
            self._rounded[scheme] = out
        return self._rounded[scheme]


def _linear(out, matrix, inputs, bias=None):
    gemm = matrix.gemm if inputs.x.shape[0] >= kernels.SMALL_BATCH else None
    if gemm is not None:    # int8 codes times int8 weights (VNNI), as llama.cpp's GEMMs
        scheme, run = gemm
        run(out, inputs.codes(scheme), *matrix.arrays)
        if bias is not None:
            out += bias
        return
    if inputs.x.shape[0] < kernels.SMALL_BATCH and matrix.layout.matvec_rounds_x is not None:
        x = inputs.x        # rows run as integer matvecs, which quantize x themselves as llama.cpp does
    else:
        x = inputs.for_type(matrix.type_name)
    if x.shape[0] == 1:
        matrix.matvec(out[0], x[0])
    else:
        matrix.matmul(out, x)
    if bias is not None:
        out += bias
