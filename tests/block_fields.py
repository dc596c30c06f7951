"""Fields of quantized blocks that test data must set by hand."""
import numpy as np


def set_split_f16(blocks, offset, d):
    """Write fp16 values d into the top nibbles of the four u16 words at offset of each block: IQ1_M's super-scale,
    split over its scale words."""
    bits = np.asarray(d, np.float16).view(np.uint16)
    words = blocks[..., offset:offset + 8].copy().view(np.uint16)
    for k in range(4):
        words[..., k] = (words[..., k] & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
    blocks[..., offset:offset + 8] = words.view(np.uint8)
