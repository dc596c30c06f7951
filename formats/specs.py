"""One spec per tensor type kvant reads or writes: its registry entry, block layout, codec, quantizer, the
activations its dot product takes, and what its quantizer does with an importance matrix.

The block work stays in the family modules (codecs_* decode, quant_* encode; blocks.py names the bytes); this table
is where a type's facts meet, so adding a type is one row here plus its kernels. dequant and quant look their
kernels up here, the runtime its activation scheme (runtime/kernels/actquant.VEC_DOT).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from . import (codecs_float, codecs_higgs, codecs_iq, codecs_kquants, codecs_legacy, codecs_ternary, quant_float,
               quant_higgs, quant_iq1, quant_iq2, quant_iq3, quant_iq4, quant_kquants, quant_legacy, quant_ternary)
from .blocks import BLOCKS
from .ggml_types import GGMLType, ggml_type


class Imatrix(IntEnum):
    """What a type's quantizer does with an importance matrix; each level implies the ones below it."""
    IGNORED = 0     # not read (as in llama.cpp)
    USED = 1        # weights the rounding error when given
    REQUIRED = 2    # llama-quantize refuses the type without one (src/llama-quant.cpp, tensor_requires_imatrix;
    #                 token_embd and output exempt), though the algorithm runs without
    NEEDED = 3      # the algorithm cannot run without one (llama.cpp asserts; quantize raises ValueError)


@dataclass(frozen=True)
class TypeSpec:
    type: GGMLType
    block: tuple | None         # blocks.block(name): byte offsets of the fields, None for F32 / F16 / BF16
    codec: tuple | None         # (kernel, tables): rows of the type -> float32 (dequant)
    quantizer: object | None    # kernel(out, x, qw): float32 rows -> the type (quant)
    activation: str | None      # the activations' rounding before llama.cpp's dot product (its vec_dot_type):
    #                             "q8_0", "q8_k", "f16", "bf16"; None: float32 as they are
    imatrix: Imatrix


_CODECS = {**codecs_float.CODECS, **codecs_legacy.CODECS, **codecs_kquants.CODECS, **codecs_iq.CODECS,
           **codecs_ternary.CODECS, **codecs_higgs.CODECS}
_QUANTIZERS = {**quant_float.QUANTIZERS, **quant_legacy.QUANTIZERS, **quant_kquants.QUANTIZERS, **quant_iq1.QUANTIZERS,
               **quant_iq2.QUANTIZERS, **quant_iq3.QUANTIZERS, **quant_iq4.QUANTIZERS, **quant_ternary.QUANTIZERS,
               **quant_higgs.QUANTIZERS}

I, U, R, N = Imatrix.IGNORED, Imatrix.USED, Imatrix.REQUIRED, Imatrix.NEEDED
_ROWS = (   # type, activation, imatrix
    ("F32", None, I), ("F16", "f16", I), ("BF16", "bf16", I),
    ("Q4_0", "q8_0", U), ("Q4_1", "q8_0", U), ("Q5_0", "q8_0", U), ("Q5_1", "q8_0", U),  # Q4_1, Q5_1: llama.cpp's
    ("Q8_0", "q8_0", I),                                                                  # Q8_1, the Q8_0 values
    ("Q2_K", "q8_k", U), ("Q3_K", "q8_k", U), ("Q4_K", "q8_k", U), ("Q5_K", "q8_k", U),   # and their sum
    ("Q6_K", "q8_k", U),
    ("IQ1_S", "q8_k", N), ("IQ1_M", "q8_k", R), ("IQ2_XXS", "q8_k", N), ("IQ2_XS", "q8_k", N),
    ("IQ2_S", "q8_k", R), ("IQ3_XXS", "q8_k", R), ("IQ3_S", "q8_k", U),
    ("IQ4_NL", "q8_0", U), ("IQ4_XS", "q8_k", U),
    ("TQ1_0", "q8_k", I), ("TQ2_0", "q8_k", I),
    ("MXFP4", "q8_0", I), ("NVFP4", None, I),       # NVFP4: read only, and run on float activations
    ("HG4", None, I), ("HG3", None, I), ("HG2", None, I),  # kvant's HIGGS: data-free, float activations
)
del I, U, R, N

SPECS: dict[str, TypeSpec] = {
    name: TypeSpec(ggml_type(name), BLOCKS.get(name), _CODECS.get(name), _QUANTIZERS.get(name), activation, imatrix)
    for name, activation, imatrix in _ROWS
}
assert set(_CODECS) | set(_QUANTIZERS) <= set(SPECS), "a codec or quantizer without a spec row"


def spec(t) -> TypeSpec | None:
    """The spec of a type (GGMLType, name or id; an unknown one raises UnknownTypeError), None for a type kvant
    neither reads nor writes (Q8_1, Q8_K, the integer types...)."""
    return SPECS.get(ggml_type(t).name)


def types_where(predicate) -> frozenset[str]:
    """The names of the types whose spec satisfies predicate(spec)."""
    return frozenset(name for name, s in SPECS.items() if predicate(s))
