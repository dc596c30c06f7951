"""The byte layout of one block of every quantized type: its fields in memory order with their sizes, as the structs
of ggml-common.h (block_q4_0 ... block_iq4_xs, block_tq1_0, block_mxfp4, block_q8_K) and kvant's HIGGS blocks.

Each field's offset is the sum of the sizes before it, so no offset is typed twice: a codec reads the fp16 scale of
a Q2_K block at `s + Q2K.d` (80, with Q2K = block("Q2_K")), not at `s + 80`. block(name) is a named tuple of
offsets plus `size`, the whole block, and numba folds it as a constant where a kernel reads it as a global. At
import every layout's size is checked against the type's block size in the registry (the gguf package's
GGML_QUANT_SIZES).
"""
from __future__ import annotations

from collections import namedtuple

from .ggml_types import ggml_type
from .higgs_types import PAIRS

QK_K = 256

# type -> its fields in memory order: (name, bytes). fp16 scales are 2 bytes, ggml_half; a "u16[n]" field is 2n.
FIELDS: dict[str, tuple[tuple[str, int], ...]] = {
    "Q4_0": (("d", 2), ("qs", 16)),                                 # nibbles: element j low, j + 16 high
    "Q4_1": (("d", 2), ("m", 2), ("qs", 16)),
    "Q5_0": (("d", 2), ("qh", 4), ("qs", 16)),                      # qh: u32, bit j = the fifth bit of element j
    "Q5_1": (("d", 2), ("m", 2), ("qh", 4), ("qs", 16)),
    "Q8_0": (("d", 2), ("qs", 32)),
    "Q2_K": (("scales", QK_K // 16), ("qs", QK_K // 4), ("d", 2), ("dmin", 2)),
    "Q3_K": (("hmask", QK_K // 8), ("qs", QK_K // 4), ("scales", 12), ("d", 2)),
    "Q4_K": (("d", 2), ("dmin", 2), ("scales", 12), ("qs", QK_K // 2)),
    "Q5_K": (("d", 2), ("dmin", 2), ("scales", 12), ("qh", QK_K // 8), ("qs", QK_K // 2)),
    "Q6_K": (("ql", QK_K // 2), ("qh", QK_K // 4), ("scales", QK_K // 16), ("d", 2)),
    "Q8_K": (("d", 4), ("qs", QK_K), ("bsums", 2 * QK_K // 16)),   # f32 d, int16 sums of 16: the K activations
    "IQ2_XXS": (("d", 2), ("qs", QK_K // 4)),                       # 8 x (4 grid bytes, u32 signs + scale)
    "IQ2_XS": (("d", 2), ("qs", QK_K // 4), ("scales", QK_K // 32)),  # qs: u16 (9-bit grid index, 7 sign bits)
    "IQ2_S": (("d", 2), ("qs", QK_K // 8), ("signs", QK_K // 8),    # ggml's one qs[64]: grid bytes, then signs
              ("qh", QK_K // 32), ("scales", QK_K // 32)),
    "IQ3_XXS": (("d", 2), ("qs", QK_K // 4), ("sas", QK_K // 8)),   # ggml's qs[96]: grid bytes, then u32
    #                                                                 scales-and-signs
    "IQ3_S": (("d", 2), ("qs", QK_K // 4), ("qh", QK_K // 32), ("signs", QK_K // 8), ("scales", QK_K // 64)),
    "IQ1_S": (("d", 2), ("qs", QK_K // 8), ("qh", QK_K // 16)),     # qh: u16[8]
    "IQ1_M": (("qs", QK_K // 8), ("qh", QK_K // 16), ("scales", QK_K // 32)),  # fp16 d in the scales' top nibbles
    "IQ4_NL": (("d", 2), ("qs", 16)),
    "IQ4_XS": (("d", 2), ("scales_h", 2), ("scales_l", QK_K // 64), ("qs", QK_K // 2)),
    "TQ1_0": (("qs", 48), ("qh", 4), ("d", 2)),                     # 5 trits a qs byte, 4 a qh byte
    "TQ2_0": (("qs", QK_K // 4), ("d", 2)),
    "MXFP4": (("e", 1), ("qs", 16)),                                # e: E8M0 exponent
    "NVFP4": (("d", 4), ("qs", 32)),                                # d: a UE4M3 scale per 16 values
    "HG4": (("d", 2), ("codes", PAIRS)),                            # higgs_types: a byte a code
    "HG3": (("d", 2), ("codes", PAIRS // 2 + PAIRS // 4)),          # the low nibbles, then the top crumbs
    "HG2": (("d", 2), ("codes", PAIRS // 2)),                       # nibbles
}


def _offsets(name: str, fields: tuple[tuple[str, int], ...]):
    names = [f for f, _ in fields]
    offsets, at = [], 0
    for _, size in fields:
        offsets.append(at)
        at += size
    expected = ggml_type(name).type_size
    if at != expected:
        raise AssertionError(f"the {name} block's fields take {at} bytes, the type's block is {expected}")
    return namedtuple(name, names + ["size"])(*offsets, at)


BLOCKS = {name: _offsets(name, fields) for name, fields in FIELDS.items()}


def block(name: str):
    """The byte offsets of a type's block fields and its size: block("Q4_K").qs == 16, .size == 144."""
    return BLOCKS[name]


def has_field(name: str, field: str) -> bool:
    return field in BLOCKS[name]._fields
