"""Dequantizers: bit-exact with gguf.quants.dequantize for every registered type, plus hand-built blocks."""
import gguf
import numpy as np
import pytest

from kvant.formats.dequant import DEQUANT_TYPES, NoCodecError, dequantize, dequantize_rows
from kvant.formats.higgs_types import is_higgs
from kvant.formats.ggml_types import UnknownTypeError, ggml_type
from block_fields import FP16_FIELDS, SPLIT_F16, set_split_f16


def qtype(name):
    return gguf.GGMLQuantizationType[name]


def reference(raw, name):
    return np.asarray(gguf.quants.dequantize(raw, qtype(name)), dtype=np.float32)


def assert_same_bits(ours, ref):
    """Equal float32 bit patterns, except that any NaN matches any NaN (payloads may differ)."""
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    nan_ours, nan_ref = np.isnan(ours), np.isnan(ref)
    assert np.array_equal(nan_ours, nan_ref), f"NaN at different places: {np.argwhere(nan_ours != nan_ref)[:5]}"
    a, b = ours[~nan_ours].view(np.uint32), ref[~nan_ref].view(np.uint32)
    bad = np.flatnonzero(a != b)
    assert bad.size == 0, f"{bad.size} values differ, first {a[bad[0]]:#x} vs {b[bad[0]]:#x}"


def random_blocks(name, rng, n_rows=3, blocks_per_row=4, finite=True):
    """Random bytes for n_rows rows; with finite=True, every scale field holds a small finite value."""
    t = ggml_type(name)
    raw = rng.integers(0, 256, (n_rows, blocks_per_row * t.type_size), dtype=np.uint8)
    if not finite:
        return raw
    blocks = raw.reshape(-1, t.type_size)
    n = blocks.shape[0]
    small_f16 = lambda: rng.uniform(-2, 2, n).astype(np.float16).view(np.uint16)  # noqa: E731
    if name == "F32":
        raw[:] = rng.standard_normal(raw.size // 4).astype(np.float32).view(np.uint8).reshape(raw.shape)
    elif name == "F16":
        raw[:] = rng.standard_normal(raw.size // 2).astype(np.float16).view(np.uint8).reshape(raw.shape)
    elif name == "BF16":
        bits = rng.standard_normal(raw.size // 2).astype(np.float32).view(np.uint32) >> 16
        raw[:] = bits.astype(np.uint16).view(np.uint8).reshape(raw.shape)
    elif name == "MXFP4":
        blocks[:, 0] = rng.integers(100, 150, n)  # E8M0 exponent near 127
    elif name == "NVFP4":
        blocks[:, :4] = rng.integers(0, 0x7F, (n, 4))  # UE4M3 scales below the 0x7F NaN code
    elif name in SPLIT_F16:
        set_split_f16(blocks, SPLIT_F16[name], small_f16().view(np.float16))
    else:
        for off in FP16_FIELDS[name]:
            blocks[:, off:off + 2] = small_f16().view(np.uint8).reshape(n, 2)
    return raw


# the codecs gguf has a reference for (kvant's own HIGGS types: test_higgs_types.py)
GGML_CODECS = [t for t in DEQUANT_TYPES if not is_higgs(t)]


@pytest.mark.parametrize("name", GGML_CODECS)
def test_random_blocks_match_gguf(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    raw = random_blocks(name, rng)
    ref = reference(raw, name)
    assert not np.isnan(ref).any()
    assert_same_bits(dequantize(raw, name), ref)


@pytest.mark.parametrize("name", GGML_CODECS)
def test_raw_random_bytes_match_gguf_nan_aware(name):
    rng = np.random.default_rng(1 + sum(map(ord, name)))
    raw = random_blocks(name, rng, n_rows=4, finite=False)
    offsets = FP16_FIELDS.get(name)
    if offsets:  # make sure NaN and inf scales are in there
        t = ggml_type(name)
        raw[0, offsets[0]:offsets[0] + 2] = np.array([0x7E00], np.uint16).view(np.uint8)
        raw[1, t.type_size + offsets[0]:t.type_size + offsets[0] + 2] = np.array([0x7C00], np.uint16).view(np.uint8)
    with np.errstate(all="ignore"):
        ref = reference(raw, name)
    assert_same_bits(dequantize(raw, name), ref)


def test_every_type_gguf_can_dequantize_has_a_codec():
    trait_types = set(gguf.quants._type_traits) | {qtype("F32"), qtype("F16")}
    assert {t.name for t in trait_types} <= set(DEQUANT_TYPES)


# ---- hand-built single blocks: the values worked out by hand from the layouts in ggml-common.h ----
F16_HALF, F16_ONE, F16_TWO, F16_QUARTER = 0x3800, 0x3C00, 0x4000, 0x3400


def block(name, fields):
    """One zeroed block of `name` with the given {offset: bytes} written in."""
    b = np.zeros((1, ggml_type(name).type_size), np.uint8)
    for off, data in fields.items():
        data = np.atleast_1d(np.asarray(data))
        b[0, off:off + data.nbytes] = data.view(np.uint8)
    return b


def u16(*v):
    return np.array(v, np.uint16)


def u32(*v):
    return np.array(v, np.uint32)


HAND_BUILT = {
    # floats: 1.5 in each encoding; MXFP4 with exponent 127 has d = 0.5, nibble 7 is e2m1 6.0 (doubled: 12)
    "F32": (block("F32", {0: np.float32(1.5)}), {0: 1.5}),
    "F16": (block("F16", {0: u16(0x3E00)}), {0: 1.5}),
    "BF16": (block("BF16", {0: u16(0x3FC0)}), {0: 1.5}),
    "MXFP4": (block("MXFP4", {0: np.uint8(127), 1: np.uint8(0x97)}), {0: 6.0, 16: -0.5, 1: 0.0}),
    # legacy: Q4_0 d=0.5, byte 0x9F -> element 0 = (15-8)/2, element 16 = (9-8)/2; zero nibbles give -8 d
    "Q4_0": (block("Q4_0", {0: u16(F16_HALF), 2: np.uint8(0x9F)}), {0: 3.5, 16: 0.5, 1: -4.0}),
    # Q5_1 d=1, m=-16: element 0 has low nibble 3 and qh bit 0 set -> 19 - 16 = 3; element 17 has qh bit 17 -> 0
    "Q5_1": (block("Q5_1", {0: u16(F16_ONE, 0xCC00), 4: u32((1 << 0) | (1 << 17)), 8: np.uint8(0x03)}),
             {0: 3.0, 17: 0.0, 1: -16.0}),
    "Q8_0": (block("Q8_0", {0: u16(F16_QUARTER), 2: np.array([-128, 127], np.int8)}), {0: -32.0, 1: 31.75}),
    # K-quants: Q4_K d=1, dmin=0.5, sub-block 0 scale 2 min 3, element 0 q=5 -> 2*5 - 1.5 = 8.5;
    # sub-block 5 (k >= 4: low 4 bits in byte 9 of scales, high 2 in byte 1's top bits) scale 0x15, min 0
    "Q4_K": (block("Q4_K", {0: u16(F16_ONE, F16_HALF), 4: np.uint8(2), 5: np.uint8(0x40), 8: np.uint8(3),
                            13: np.uint8(0x05), 16: np.uint8(5), 16 + 64: np.uint8(0x10)}),
             {0: 8.5, 1: -1.5, 160: 21.0}),
    # Q6_K d=0.25, scale 0 = -2, element 0: low nibble 15 | high bits 2 -> 47 - 32 = 15 -> -7.5
    "Q6_K": (block("Q6_K", {0: np.uint8(0x0F), 128: np.uint8(0x02), 192: np.int8(-2), 208: u16(F16_QUARTER)}),
             {0: -7.5, 1: 16.0}),
    # Q3_K d=1, scale of group 0 = 33 (low 4 bits 1, high 2 bits 2) - 32 = 1; element 0 q=3 with hmask bit set -> 3;
    # element 1 q=0 with hmask clear -> -4
    "Q3_K": (block("Q3_K", {0: np.uint8(1), 32: np.uint8(3), 96: np.uint8(1), 104: np.uint8(2), 108: u16(F16_ONE)}),
             {0: 3.0, 1: -4.0}),
    # IQ4_NL d=2: nibbles 0 and 15 are kvalues -127 and 113
    "IQ4_NL": (block("IQ4_NL", {0: u16(F16_TWO), 2: np.uint8(0xF0)}), {0: -254.0, 16: 226.0}),
    # IQ2_XXS d=1, scale 1 -> db = (0.5 + 1) / 4 = 0.375; grid entry 1 = bytes 0x2b,8,8,...; ksigns[1] = 0x81
    # flips elements 0 and 7
    "IQ2_XXS": (block("IQ2_XXS", {0: u16(F16_ONE), 2: np.uint8(1), 6: u32((1 << 28) | 1)}),
                {0: -0.375 * 0x2B, 1: 3.0, 7: -3.0, 8: 3.0}),
    # IQ1_S d=1, qh 0: dl = 1, delta +0.125, grid entry 0 is all -1 -> -0.875; qh sign bit -> delta -0.125
    "IQ1_S": (block("IQ1_S", {0: u16(F16_ONE), 36: u16(0x8000 | (1 << 12))}), {0: -0.875, 32: -3.375}),
    # ternary: TQ2_0 d=1, byte 0b10_01_00_10 -> elements 0, 32, 64, 96 = 1, -1, 0, 1
    "TQ2_0": (block("TQ2_0", {0: np.uint8(0b10010010), 64: u16(F16_ONE)}), {0: 1.0, 32: -1.0, 64: 0.0, 96: 1.0}),
    # TQ1_0: trits (2, 0, 0, 0, 0) = 162 stored as ceil(162 * 256 / 243) = 171 -> elements 0, 32 = 1, -1
    "TQ1_0": (block("TQ1_0", {0: np.uint8(171), 52: u16(F16_HALF)}), {0: 0.5, 32: -0.5, 1: -0.5}),
}


@pytest.mark.parametrize("name", HAND_BUILT)
def test_hand_built_block(name):
    raw, expected = HAND_BUILT[name]
    out = dequantize(raw, name)
    assert out.shape == (1, ggml_type(name).block_size)
    for index, value in expected.items():
        assert out[0, index] == np.float32(value), (index, out[0, index], value)
    assert_same_bits(out, reference(raw, name))


# ---- round trips through the gguf package's quantizers ----
ROUND_TRIP_TOLERANCE = {  # RMS error / RMS of a standard normal
    "F32": 0.0, "F16": 5e-4, "BF16": 4e-3, "Q8_0": 0.01, "Q5_0": 0.06, "Q5_1": 0.06, "Q4_0": 0.11, "Q4_1": 0.11,
    "MXFP4": 0.15, "TQ2_0": 0.8, "TQ1_0": 0.8,
}


@pytest.mark.parametrize("name", ROUND_TRIP_TOLERANCE)
def test_round_trip_through_gguf_quantize(name):
    x = np.random.default_rng(7).standard_normal((4, 512)).astype(np.float32)
    q = np.asarray(gguf.quants.quantize(x, qtype(name)))
    raw = q.view(np.uint8).reshape(4, -1)
    ours = dequantize(raw, name)
    assert_same_bits(ours, reference(raw, name))
    assert np.sqrt(np.mean((ours - x) ** 2)) <= ROUND_TRIP_TOLERANCE[name]


# ---- the shared layer ----
def test_type_given_as_name_id_or_ggml_type():
    raw = random_blocks("Q4_K", np.random.default_rng(3))
    a = dequantize(raw, "Q4_K")
    for t in ("q4_k", 12, ggml_type("Q4_K"), qtype("Q4_K")):
        assert_same_bits(dequantize(raw, t), a)


def test_unknown_type_is_refused_by_name():
    raw = np.zeros((1, 18), np.uint8)
    with pytest.raises(UnknownTypeError, match="99"):
        dequantize(raw, 99)
    with pytest.raises(UnknownTypeError, match="Q4_9"):
        dequantize(raw, "Q4_9")
    with pytest.raises(NoCodecError, match="Q8_K"):
        dequantize(np.zeros((1, 292), np.uint8), "Q8_K")


def test_partial_block_is_refused():
    with pytest.raises(ValueError, match="Q4_0.*18 bytes"):
        dequantize(np.zeros((2, 20), np.uint8), "Q4_0")


def test_shapes():
    raw = random_blocks("Q8_0", np.random.default_rng(4), n_rows=6)
    full = dequantize(raw, "Q8_0")
    assert full.shape == (6, 128)
    assert_same_bits(dequantize(raw.reshape(2, 3, -1), "Q8_0"), full.reshape(2, 3, 128))
    assert_same_bits(dequantize(raw[2], "Q8_0"), full[2])
    assert dequantize(raw[:0], "Q8_0").shape == (0, 128)
    assert_same_bits(dequantize(raw[:, :68], "Q8_0"), full[:, :64])  # a non-contiguous view


def test_dequantize_rows_gathers():
    raw = random_blocks("IQ4_XS", np.random.default_rng(5), n_rows=9, blocks_per_row=2)
    full = dequantize(raw, "IQ4_XS")
    rows = [8, 0, 3, 3, -1]
    assert_same_bits(dequantize_rows(raw, "IQ4_XS", rows), full[rows])
    assert_same_bits(dequantize_rows(raw, "IQ4_XS", np.array([4], np.int32)), full[[4]])
    assert dequantize_rows(raw, "IQ4_XS", []).shape == (0, 512)
    with pytest.raises(IndexError, match="9"):
        dequantize_rows(raw, "IQ4_XS", [9])
    with pytest.raises(IndexError):
        dequantize_rows(raw, "IQ4_XS", [-10])
