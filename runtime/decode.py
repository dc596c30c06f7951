"""The decode step: one token through a layer in a single numba call.

Transformer.forward runs a layer as about twenty Python-level calls (numpy and numba); at one token each costs a few
microseconds, together about a third of a SmolLM2 token. Here the whole layer is one jitted function. Which kernel
multiplies each matrix is decided at compile time: the weight types are passed as string literals, so every distinct
combination of types in a file (usually two or three) compiles once and is then loaded from numba's disk cache.

Numerics are those of forward(): the same ops, the same activation rounding per weight type, the same order.
"""
import numpy as np
from numba import njit, types
from numba.core.typing.typeof import typeof
from numba.extending import overload

from kvant.runtime.kernels import LAYOUTS, ops
from kvant.runtime.kernels._common import copy_into
from kvant.runtime.kernels.actquant import VEC_DOT_ROW, round_f16

ABSENT = ""     # the type of a matrix that is not multiplied on its own (stacked into the one before it)


# -- compile-time choices -------------------------------------------------------------------------------------------

def matvec(kind, out, x, args, buf):
    """out = W @ x for a matrix of type `kind` (a string literal; ABSENT does nothing) with kernel arguments args,
    x first rounded into buf as llama.cpp rounds activations for that type."""


@overload(matvec)
def _matvec(kind, out, x, args, buf):
    if not isinstance(kind, types.StringLiteral):
        return None
    if kind.literal_value == ABSENT:
        return lambda kind, out, x, args, buf: None
    layout = LAYOUTS[kind.literal_value]
    kernel = layout.matvec
    # an integer kernel quantizes x itself (the same codes: that rounding is idempotent), so round only for the others
    rounding = VEC_DOT_ROW.get(kind.literal_value) if layout.matvec_rounds_x is None else None
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


def store(cache, pos, values, scratch):
    """cache[h, pos, :] = values of head h, as the cache stores them (f16 bits, rounded to nearest even, or f32)."""


@overload(store)
def _store(cache, pos, values, scratch):
    if cache.dtype == types.uint16:
        def as_f16(cache, pos, values, scratch):
            copy_into(scratch, values)
            round_f16(scratch)
            bits = scratch.view(np.uint32)
            width = cache.shape[2]
            for i in range(values.shape[0]):
                cache[i // width, pos, i % width] = f16_bits_of_rounded(bits[i])
        return as_f16

    def as_f32(cache, pos, values, scratch):
        width = cache.shape[2]
        for i in range(values.shape[0]):
            cache[i // width, pos, i % width] = values[i]
    return as_f32


@njit(cache=True, inline="always")
def f16_bits_of_rounded(b):
    """The f16 bit pattern of a float32 (given as its bits) that is already an f16 value (round_f16)."""
    sign = (b >> 16) & 0x8000
    mag = b & 0x7FFFFFFF
    if mag >= 0x7F800000:                       # inf, NaN (keeps NaN a NaN)
        mant = (mag >> 13) & 0x3FF
        return np.uint16(sign | 0x7C00 | (mant if mant or mag == 0x7F800000 else 0x200))
    if mag >= 0x38800000:                       # normal
        return np.uint16(sign | (((mag >> 23) - 112) << 10) | ((mag >> 13) & 0x3FF))
    if mag == 0:
        return np.uint16(sign)
    # subnormal f16: m * 2^-24 with m < 1024; the float32 is (2^23 + f) * 2^(exp - 150), so m = that >> (126 - exp)
    exp = mag >> 23
    return np.uint16(sign | (((mag & 0x7FFFFF) | 0x800000) >> (126 - exp)))


# -- the layer ---------------------------------------------------------------------------------------------------

@njit(cache=True)
def _layer(kind_q, kind_k, kind_v, kind_o, kind_gate, kind_up, kind_down, activation,
           x, pos, k_cache, v_cache, cos, sin, mats, vecs, bufs, consts):
    (attn_norm, q_norm, k_norm, attn_sub_norm, attn_post_norm,
     ffn_norm, ffn_sub_norm, ffn_post_norm, bq, bk, bv, bo) = vecs
    w_q, w_k, w_v, w_o, w_gate, w_up, w_down = mats
    h, qkv, att, gate_up, round_d, round_att, round_ff, kv_scratch = bufs
    eps, n_head, n_kv_head, dk, dv, rows_q, rows_gate, n_rot, neox, scale, window = consts
    nq = n_head * dk
    nk = n_kv_head * dk
    d_ff = gate_up.shape[0] // 2
    x2 = x.reshape(1, x.shape[0])
    h2 = h.reshape(1, h.shape[0])

    ops.rmsnorm(h2, x2, attn_norm, eps)
    matvec(kind_q, qkv[:rows_q], h, w_q, round_d)          # q, or q|k|v stacked
    matvec(kind_k, qkv[nq:nq + nk], h, w_k, round_d)
    matvec(kind_v, qkv[nq + nk:], h, w_v, round_d)
    q = qkv[:nq]
    k = qkv[nq:nq + nk]
    v = qkv[nq + nk:]
    add(q, bq)
    add(k, bk)
    add(v, bv)
    norm_heads(q, q_norm, eps, n_head)
    norm_heads(k, k_norm, eps, n_kv_head)
    positions = np.full(1, pos, np.int64)
    q3 = q.reshape(1, n_head, dk)
    ops.rope(q3, positions, cos, sin, n_rot, neox)
    ops.rope(k.reshape(1, n_kv_head, dk), positions, cos, sin, n_rot, neox)
    store(k_cache, pos, k, kv_scratch[:nk])
    store(v_cache, pos, v, kv_scratch[:v.shape[0]])
    ops.attention(att.reshape(1, n_head, dv), q3, k_cache, v_cache, pos, scale, window, np.float32(0.0))
    norm(att, attn_sub_norm, eps)
    matvec(kind_o, h, att, w_o, round_att)
    add(h, bo)
    norm(h, attn_post_norm, eps)
    x += h

    ops.rmsnorm(h2, x2, ffn_norm, eps)
    matvec(kind_gate, gate_up[:rows_gate], h, w_gate, round_d)   # gate, or gate|up stacked
    matvec(kind_up, gate_up[d_ff:], h, w_up, round_d)
    gate = gate_up[:d_ff]
    activate(activation, gate.reshape(1, d_ff), gate_up[d_ff:].reshape(1, d_ff))
    norm(gate, ffn_sub_norm, eps)
    matvec(kind_down, h, gate, w_down, round_ff)
    norm(h, ffn_post_norm, eps)
    x += h


def _signature(args):
    return tuple(types.literal(a) if isinstance(a, str) else typeof(a) for a in args)


class LayerStep:
    """One layer's decode step, compiled (or loaded from the disk cache) for its types, called without numba's
    per-call dispatch: with literal arguments the dispatcher would retry a non-literal compile on every call."""

    def __init__(self, kinds, activation, mats, vecs, consts):
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
