"""The decode step: one token through a layer in a single numba call.

Transformer.forward runs a layer as about twenty Python-level calls (numpy and numba); at one token each costs a few
microseconds, together about a third of a SmolLM2 token. Here the whole layer is one jitted function. Which kernel
multiplies each matrix is decided at compile time: the weight types are passed as string literals, so every distinct
combination of types in a file (usually two or three) compiles once and is then loaded from numba's disk cache.

Numerics are those of forward(): the same ops, the same activation rounding per weight type, the same order.
"""
from collections import namedtuple

import numpy as np
from numba import njit, types
from numba.core.typing.typeof import typeof
from numba.extending import overload

from kvant.runtime.kernels import layout_for, ops
from kvant.runtime.kernels._ir import f32_to_f16_bits
from kvant.runtime.kernels.actquant import VEC_DOT_ROW

ABSENT = ""     # the type of a matrix that is not multiplied on its own (stacked into the one before it)

# The step's arguments by name (numba compiles a namedtuple's fields as attributes). A matrix is its kernel
# arguments, () where ABSENT; a vector None where the architecture has none (no norm, no bias).
LayerMats = namedtuple("LayerMats", "q k v o gate up down")
LayerVecs = namedtuple("LayerVecs", "attn_norm q_norm k_norm attn_sub_norm attn_post_norm ffn_norm ffn_sub_norm "
                                    "ffn_post_norm bq bk bv bo")
LayerConsts = namedtuple("LayerConsts", "eps n_head n_kv_head dk dv rows_q rows_gate n_rot neox scale window")
# Per-token work space, shared by the layers: h (d_model), qkv (the q|k|v outputs), att (the heads' output),
# gate_up (2 d_ff), the activations rounded for the weights reading h, att and the gate (round_d, round_att,
# round_ff), position (the token's, for RoPE).
StepBuffers = namedtuple("StepBuffers", "h qkv att gate_up round_d round_att round_ff position")


def step_buffers(d_model, n_qkv, n_att, d_ff):
    f32 = [np.zeros(n, np.float32) for n in (d_model, n_qkv, n_att, 2 * d_ff, d_model, n_att, d_ff)]
    return StepBuffers(*f32, position=np.zeros(1, np.int64))


# -- compile-time choices -------------------------------------------------------------------------------------------

def matvec(kind, out, x, args, buf):
    """out = W @ x for a matrix whose QMatrix.kernel_key is `kind` (a string literal "type@path"; ABSENT does
    nothing) with kernel arguments args, x first rounded into buf as llama.cpp rounds activations for that type."""


@overload(matvec)
def _matvec(kind, out, x, args, buf):
    if not isinstance(kind, types.StringLiteral):
        return None
    if kind.literal_value == ABSENT:
        return lambda kind, out, x, args, buf: None
    type_name, path = kind.literal_value.split("@")
    layout = layout_for(type_name, path)
    kernel = layout.matvec
    # an integer kernel quantizes x itself (the same codes: that rounding is idempotent), so round only for the others
    rounding = VEC_DOT_ROW.get(type_name) if layout.matvec_rounds_x is None else None
    if rounding is None:
        def as_is(kind, out, x, args, buf):
            kernel(out, x, *args)
        return as_is

    def rounded(kind, out, x, args, buf):
        rounding(buf, x)
        kernel(out, buf, *args)
    return rounded


def activate(kind, gate, up):
    """gate = act(gate) * up for the activation named by the string literal kind (ops.ACTIVATIONS)."""


@overload(activate)
def _activate(kind, gate, up):
    if isinstance(kind, types.StringLiteral):
        act = ops.ACTIVATIONS[kind.literal_value]
        return lambda kind, gate, up: act(gate, up)
    return None


def norm(v, weight, eps):
    """In-place RMSNorm of the 1-D v, or nothing when the layer has no such norm (weight None)."""


@overload(norm)
def _norm(v, weight, eps):
    if isinstance(weight, types.NoneType):
        return lambda v, weight, eps: None

    def apply(v, weight, eps):
        row = v.reshape(1, v.shape[0])
        ops.rmsnorm(row, row, weight, eps)
    return apply


def norm_heads(v, weight, eps, n_heads):
    """In-place RMSNorm of each head of the 1-D v (q/k norms), or nothing when weight is None."""


@overload(norm_heads)
def _norm_heads(v, weight, eps, n_heads):
    if isinstance(weight, types.NoneType):
        return lambda v, weight, eps, n_heads: None
    return lambda v, weight, eps, n_heads: ops.rmsnorm_heads(
        v.reshape(1, n_heads, v.shape[0] // n_heads), weight, eps)


def add(v, bias):
    """v += bias, or nothing when bias is None."""


@overload(add)
def _add(v, bias):
    if isinstance(bias, types.NoneType):
        return lambda v, bias: None

    def apply(v, bias):
        for i in range(v.shape[0]):
            v[i] += bias[i]
    return apply


def store(cache, pos, values):
    """cache[h, pos, :] = values of head h, as the cache stores them (f16 bits, rounded to nearest even as the
    prefill's ops.store_kv does, or f32)."""


@overload(store)
def _store(cache, pos, values):
    if cache.dtype == types.uint16:
        def as_f16(cache, pos, values):
            width = cache.shape[2]
            for i in range(values.shape[0]):
                cache[i // width, pos, i % width] = f32_to_f16_bits(values[i])
        return as_f16

    def as_f32(cache, pos, values):
        width = cache.shape[2]
        for i in range(values.shape[0]):
            cache[i // width, pos, i % width] = values[i]
    return as_f32


# -- the layer ---------------------------------------------------------------------------------------------------

@njit(cache=True)
def _layer(kind_q, kind_k, kind_v, kind_o, kind_gate, kind_up, kind_down, activation,
           x, pos, k_cache, v_cache, cos, sin, mats, vecs, bufs, consts):
    c = consts
    nq = c.n_head * c.dk
    nk = c.n_kv_head * c.dk
    d_ff = bufs.gate_up.shape[0] // 2
    qkv, h = bufs.qkv, bufs.h
    x2 = x.reshape(1, x.shape[0])
    h2 = h.reshape(1, h.shape[0])

    ops.rmsnorm(h2, x2, vecs.attn_norm, c.eps)
    matvec(kind_q, qkv[:c.rows_q], h, mats.q, bufs.round_d)         # q, or q|k|v stacked
    matvec(kind_k, qkv[nq:nq + nk], h, mats.k, bufs.round_d)
    matvec(kind_v, qkv[nq + nk:], h, mats.v, bufs.round_d)
    q = qkv[:nq]
    k = qkv[nq:nq + nk]
    v = qkv[nq + nk:]
    add(q, vecs.bq)
    add(k, vecs.bk)
    add(v, vecs.bv)
    norm_heads(q, vecs.q_norm, c.eps, c.n_head)
    norm_heads(k, vecs.k_norm, c.eps, c.n_kv_head)
    bufs.position[0] = pos
    q3 = q.reshape(1, c.n_head, c.dk)
    ops.rope(q3, bufs.position, cos, sin, c.n_rot, c.neox)
    ops.rope(k.reshape(1, c.n_kv_head, c.dk), bufs.position, cos, sin, c.n_rot, c.neox)
    store(k_cache, pos, k)
    store(v_cache, pos, v)
    att = bufs.att
    ops.attention(att.reshape(1, c.n_head, c.dv), q3, k_cache, v_cache, pos, c.scale, c.window, np.float32(0.0))
    norm(att, vecs.attn_sub_norm, c.eps)
    matvec(kind_o, h, att, mats.o, bufs.round_att)
    add(h, vecs.bo)
    norm(h, vecs.attn_post_norm, c.eps)
    x += h

    ops.rmsnorm(h2, x2, vecs.ffn_norm, c.eps)
    gate_up = bufs.gate_up
    matvec(kind_gate, gate_up[:c.rows_gate], h, mats.gate, bufs.round_d)     # gate, or gate|up stacked
    matvec(kind_up, gate_up[d_ff:], h, mats.up, bufs.round_d)
    gate = gate_up[:d_ff]
    activate(activation, gate.reshape(1, d_ff), gate_up[d_ff:].reshape(1, d_ff))
    norm(gate, vecs.ffn_sub_norm, c.eps)
    matvec(kind_down, h, gate, mats.down, bufs.round_ff)
    norm(h, vecs.ffn_post_norm, c.eps)
    x += h


def _signature(args):
    return tuple(types.literal(a) if isinstance(a, str) else typeof(a) for a in args)


class LayerStep:
    """One layer's decode step, compiled (or loaded from the disk cache) for its types, called without numba's
    per-call dispatch: with literal arguments the dispatcher would retry a non-literal compile on every call."""

    def __init__(self, kinds, activation, mats: LayerMats, vecs: LayerVecs, consts: LayerConsts):
        self.kinds = tuple(kinds) + (activation,)
        self.mats = mats
        self.vecs = vecs
        self.consts = consts
        self._entry = None

    def _args(self, x, pos, k_cache, v_cache, cos, sin, bufs):
        return self.kinds + (x, pos, k_cache, v_cache, cos, sin, self.mats, self.vecs, bufs, self.consts)

    def prepare(self, *call_args):
        """Compile, or load from the disk cache, the layer for these arguments' types, without running it."""
        if self._entry is None:
            sig = _signature(self._args(*call_args))
            _layer.compile(sig)
            self._entry = _layer.overloads[sig].entry_point

    def __call__(self, *call_args):
        self.prepare(*call_args)
        self._entry(*self._args(*call_args))
