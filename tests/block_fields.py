"""Fields of quantized blocks that test data must set by hand, at the offsets formats/blocks.py names."""
import numpy as np

from kvant.formats.blocks import BLOCKS, FIELDS

# the ggml weight types llama.cpp writes for a dense model, whose blocks the tests fill with random bytes
QUANTIZED = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS",
             "TQ1_0", "TQ2_0", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M")
FP16_SCALES = ("d", "m", "dmin")


def _fp16_scales(name):
    return tuple(getattr(BLOCKS[name], field) for field, size in FIELDS[name] if field in FP16_SCALES and size == 2)


# Where each type keeps its fp16 scales, as byte offsets in a block. Random bytes there make NaN and inf common;
# tests that want finite values write small ones there. IQ1_M has none: its fp16 d is split (SPLIT_F16).
FP16_FIELDS = {name: _fp16_scales(name) for name in QUANTIZED}
SPLIT_F16 = {"IQ1_M": BLOCKS["IQ1_M"].scales}


def set_split_f16(blocks, offset, d):
    """Write fp16 values d into the top nibbles of the four u16 words at offset of each block: IQ1_M's super-scale,
    split over its scale words."""
    bits = np.asarray(d, np.float16).view(np.uint16)
    words = blocks[..., offset:offset + 8].copy().view(np.uint16)
    for k in range(4):
        words[..., k] = (words[..., k] & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
    blocks[..., offset:offset + 8] = words.view(np.uint8)
