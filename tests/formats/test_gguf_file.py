"""GGUFFile: agrees with gguf.GGUFReader on a file written by gguf.GGUFWriter; every kind of bad file raises
GGUFError (never IndexError, struct.error or a crash)."""
import struct
import time

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V

from kvant.formats.gguf_file import GGUFError, GGUFFile, open_gguf

# ---- a sample file written by the gguf package ----
SCALARS = [  # (key, GGUFValueType, value)
    ("t.u8", V.UINT8, 200), ("t.i8", V.INT8, -5), ("t.u16", V.UINT16, 65000), ("t.i16", V.INT16, -30000),
    ("t.u32", V.UINT32, 4_000_000_000), ("t.i32", V.INT32, -2_000_000_000), ("t.u64", V.UINT64, 2**63 + 5),
    ("t.i64", V.INT64, -(2**62)), ("t.f32", V.FLOAT32, 1.5), ("t.f64", V.FLOAT64, -2.25),
    ("t.bool", V.BOOL, True), ("t.false", V.BOOL, False), ("t.str", V.STRING, "héllo, мир ✓"),
]
NUMERIC_ARRAYS = [  # (key, element type, values)
    ("a.u8", V.UINT8, [0, 255, 7]), ("a.i8", V.INT8, [-128, 127]), ("a.u16", V.UINT16, [1, 65535]),
    ("a.i16", V.INT16, [-1, 2]), ("a.u32", V.UINT32, [3, 4_000_000_000]), ("a.i32", V.INT32, [-7, 8, 9]),
    ("a.u64", V.UINT64, [2**64 - 1]), ("a.i64", V.INT64, [-(2**63), 5]), ("a.f32", V.FLOAT32, [0.5, -1024.0]),
    ("a.f64", V.FLOAT64, [1e300, -0.0]), ("a.bool", V.BOOL, [True, False, True]),
]
STRING_ARRAYS = {
    "s.tokens": ["<s>", "", "Ġthe", "привет", "▁мир", "日本", "emoji 🙂", "tab\tnew\nline"],
    "s.with_nul": ["a\x00b", "c", "\x01"],  # the bulk decoder must not split on a byte a string contains
    "s.all_ascii": ["".join(map(chr, range(128))), "z"],  # no free separator byte: the per-string path
    "s.one": ["only"],
}
NESTED = {"n.ints": [[1, 2], [3, 4, 5]], "n.strs": [["a", "b"], ["ц"]]}
TENSORS = {  # name -> (numpy array to write, raw_dtype or None)
    "tok.weight": (np.arange(24, dtype=np.float32).reshape(6, 4), None),
    "norm": (np.linspace(-1, 1, 8, dtype=np.float32), None),
    "h.f16": (np.arange(2 * 3 * 8, dtype=np.float16).reshape(2, 3, 8), None),
    "q.q4_0": (np.random.default_rng(0).integers(0, 256, (3, 36), dtype=np.uint8), Q.Q4_0),  # 3 x 64 values
    "q.q6_k": (np.random.default_rng(1).integers(0, 256, (2, 210), dtype=np.uint8), Q.Q6_K),  # 2 x 256 values
}


def write_sample(path, alignment=None):
    w = gguf.GGUFWriter(str(path), arch="test")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, vtype, value in SCALARS:
        w.add_key_value(key, value, vtype)
    for key, etype, values in NUMERIC_ARRAYS:
        w.add_key_value(key, values, V.ARRAY, sub_type=etype)
    for key, values in {**STRING_ARRAYS, **NESTED}.items():
        w.add_array(key, values)
    for name, (array, raw_dtype) in TENSORS.items():
        w.add_tensor(name, array, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_sample(tmp_path_factory.mktemp("gguf") / "sample.gguf")


def test_metadata_matches_writer_and_reader(sample):
    reader = gguf.GGUFReader(sample)
    with GGUFFile(sample) as f:
        assert f.version == 3 and f.alignment == 32
        md = f.metadata
        for key, vtype, value in SCALARS:
            assert md[key] == value and type(md[key]) is type(value), key
        for key, etype, values in NUMERIC_ARRAYS:
            field = reader.fields[key]
            assert isinstance(md[key], np.ndarray) and md[key].tolist() == values, key
            if etype != V.BOOL:
                assert md[key].dtype == field.parts[-1].dtype, key
        for key, values in STRING_ARRAYS.items():
            assert md[key] == values and md[key] == reader.fields[key].contents(), key
        assert [a.tolist() for a in md["n.ints"]] == NESTED["n.ints"]
        assert md["n.strs"] == NESTED["n.strs"]
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key in NESTED:
                continue
            expected = field.contents()
            got = md[key]
            assert (got.tolist() if isinstance(got, np.ndarray) else got) == expected, key
        assert set(md) == {k for k in reader.fields if not k.startswith("GGUF.")}


def test_tensor_table_matches_reader(sample):
    reader = gguf.GGUFReader(sample)
    with GGUFFile(sample) as f:
        assert list(f.tensors) == [t.name for t in reader.tensors]
        for rt in reader.tensors:
            t = f.tensors[rt.name]
            assert t.shape == tuple(int(n) for n in reversed(rt.shape.tolist()))
            assert t.ggml_type.id == rt.tensor_type and t.ggml_type.name == rt.tensor_type.name
            assert (t.offset, t.nbytes) == (rt.data_offset, rt.n_bytes)
            raw = f.raw(rt.name)
            assert raw.dtype == np.uint8 and raw.shape == (t.n_rows, t.row_bytes)
            assert not raw.flags.owndata and not raw.flags.writeable  # a view into the read-only map
            assert np.array_equal(raw.ravel(), rt.data.view(np.uint8).ravel())
        assert f.tensors["h.f16"].shape == (2, 3, 8) and f.tensors["q.q4_0"].shape == (3, 64)
        assert np.array_equal(f.raw("tok.weight").view(np.float32), TENSORS["tok.weight"][0])


def test_custom_alignment(tmp_path):
    path = write_sample(tmp_path / "a64.gguf", alignment=64)
    with GGUFFile(path) as f:
        assert f.alignment == 64 and f.data_offset % 64 == 0
        assert all(t.offset % 64 == 0 for t in f.tensors.values())
        assert np.array_equal(f.raw("norm").view(np.float32).ravel(), TENSORS["norm"][0])


def test_close_release_and_views(sample):
    f = open_gguf(sample)
    view = f.raw("tok.weight")
    f.release("tok.weight")
    assert np.array_equal(view.view(np.float32), TENSORS["tok.weight"][0])  # paged back in from the file
    f.close()
    assert np.array_equal(view.view(np.float32), TENSORS["tok.weight"][0])  # the map outlives close() for views
    with pytest.raises(ValueError, match="closed"):
        f.raw("tok.weight")
    f.close()  # twice is fine
    with pytest.raises(KeyError, match="nope"):
        GGUFFile(sample).raw("nope")


def test_big_string_array_is_fast(tmp_path):
    tokens = [f"tok{i}_ж" for i in range(262_144)]
    path = tmp_path / "vocab.gguf"
    path.write_bytes(build([kv_strs("tokenizer.ggml.tokens", tokens)]))
    GGUFFile(path).close()  # compile / load the numba scanner
    t = time.perf_counter()
    with GGUFFile(path) as f:
        elapsed = time.perf_counter() - t
        assert f.metadata["tokenizer.ggml.tokens"] == tokens
    assert elapsed < 0.5, f"opening a 262,144-token vocabulary took {elapsed:.3f} s"


# ---- hand-built files, for the bad cases the writer refuses to make ----
def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return gstr(key) + struct.pack("<I", vtype) + payload


def kv_u32(key, v):
    return kv(key, V.UINT32, struct.pack("<I", v))


def kv_strs(key, items):
    return kv(key, V.ARRAY, struct.pack("<IQ", V.STRING, len(items)) + b"".join(map(gstr, items)))


def tinfo(name, ne, type_id=0, offset=0):
    return gstr(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, type_id, offset)


def build(kvs=(), tensors=(), data=b"", version=3, magic=b"GGUF", n_kv=None, n_tensors=None, alignment=32):
    head = magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(tensors)
    return head + bytes(-len(head) % alignment) + data


GOOD = dict(kvs=[kv_u32("k.a", 1), kv_strs("k.s", ["x", "y"])],
            tensors=[tinfo("w", (4, 2), 0, 0), tinfo("v", (32,), int(Q.Q8_0), 32)], data=bytes(32 + 34))


def open_bytes(tmp_path, data, name="bad.gguf"):
    path = tmp_path / name
    path.write_bytes(data)
    return GGUFFile(path)


def test_hand_built_file_is_valid(tmp_path):
    with open_bytes(tmp_path, build(**GOOD)) as f:
        assert f.metadata == {"k.a": 1, "k.s": ["x", "y"]}
        assert f.tensors["w"].shape == (2, 4) and f.tensors["v"].nbytes == 34
    with open_bytes(tmp_path, build(kvs=[kv("e", V.ARRAY, struct.pack("<IQ", V.STRING, 0)),
                                         kv("f", V.ARRAY, struct.pack("<IQ", V.FLOAT32, 0))])) as f:
        assert f.metadata["e"] == [] and f.metadata["f"].shape == (0,)
    with open_bytes(tmp_path, build(version=2)) as f:
        assert f.version == 2 and f.tensors == {}


def bad(**changes):
    return build(**{**GOOD, **changes})


BAD_FILES = {  # case -> (file bytes, a fragment the message must contain)
    "empty": (b"", "too small"),
    "tiny": (b"GGUF\x03\x00", "too small"),
    "bad magic": (b"GGML" + build(**GOOD)[4:], "magic"),
    "version 99": (bad(version=99), "version 99"),
    "version 1": (bad(version=1), "version 1"),
    "big-endian": (bad(version=3 << 24), "big-endian"),
    "absurd n_kv": (bad(n_kv=2**60), str(2**60)),
    "absurd n_tensors": (bad(n_tensors=2**62), str(2**62)),
    "duplicate key": (bad(kvs=[kv_u32("k.a", 1), kv_u32("k.a", 2)]), "duplicate key 'k.a'"),
    "duplicate tensor": (bad(tensors=[tinfo("w", (4,)), tinfo("w", (4,), 0, 32)]), "duplicate tensor name 'w'"),
    "unknown type id": (bad(tensors=[tinfo("w", (4,), 99)]), "type id 99"),
    "removed type id 4": (bad(tensors=[tinfo("w", (32,), 4)]), "type id 4"),
    "offset past EOF": (bad(tensors=[tinfo("w", (4, 2), 0, 4096)]), "past the end"),
    "extent past EOF": (bad(tensors=[tinfo("w", (4, 100), 0, 0)]), "past the end"),
    "huge dims": (bad(tensors=[tinfo("w", (2**40, 2**40), 0, 0)]), "past the end"),
    "misaligned offset": (bad(tensors=[tinfo("w", (4,), 0, 8)]), "offset 8"),
    "alignment 48": (bad(kvs=[kv_u32("general.alignment", 48)]), "48"),
    "alignment 0": (bad(kvs=[kv_u32("general.alignment", 0)]), "power of two"),
    "alignment string": (bad(kvs=[kv("general.alignment", V.STRING, gstr("32"))]), "power of two"),
    "0 dims": (bad(tensors=[gstr("w") + struct.pack("<IIQ", 0, 0, 0)]), "0 dimensions"),
    "5 dims": (bad(tensors=[tinfo("w", (1, 1, 1, 1, 1))]), "5 dimensions"),
    "zero dim": (bad(tensors=[tinfo("w", (4, 0))]), "not positive"),
    "partial block": (bad(tensors=[tinfo("w", (48,), int(Q.Q4_0))]), "block size 32"),
    "unknown value type": (bad(kvs=[kv("k", 13, b"\0" * 8)]), "value type 13"),
    "unknown element type": (bad(kvs=[kv("k", V.ARRAY, struct.pack("<IQ", 77, 1) + bytes(8))]), "element type 77"),
    "absurd array count": (bad(kvs=[kv("k", V.ARRAY, struct.pack("<IQ", V.UINT64, 2**61))]), str(2**61)),
    "absurd string array": (bad(kvs=[kv("k", V.ARRAY, struct.pack("<IQ", V.STRING, 2**40))]), str(2**40)),
    "arrays nested too deep": (bad(kvs=[kv("k", V.ARRAY, struct.pack("<IQ", V.ARRAY, 1) * 5000)]), "deep"),
    "string past EOF": (bad(kvs=[kv("k", V.STRING, struct.pack("<Q", 2**63 + 1))]), "truncated"),
    "string item past EOF": (bad(kvs=[kv("k", V.ARRAY, struct.pack("<IQ", V.STRING, 2) + gstr("ab")
                                         + struct.pack("<Q", 2**50))]), "truncated"),
    "bad UTF-8 key": (bad(kvs=[kv(b"k\xff", V.UINT8, b"\x01")]), "UTF-8"),
    "bad UTF-8 value": (bad(kvs=[kv("k", V.STRING, gstr(b"\xc3("))]), "UTF-8"),
    "bad UTF-8 in array": (bad(kvs=[kv_strs("k", ["fine", b"\xe2\x82"])]), "'k'[1]"),
    "surrogate in array": (bad(kvs=[kv_strs("k", [b"\xed\xa0\x80", "x"])]), "'k'[0]"),
    "bad UTF-8 tensor name": (bad(tensors=[tinfo(b"\x80", (4,))]), "UTF-8"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_raises_gguf_error(tmp_path, case):
    data, fragment = BAD_FILES[case]
    with pytest.raises(GGUFError) as err:
        open_bytes(tmp_path, data)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_every_truncation_raises(tmp_path, sample):
    data = sample.read_bytes()
    with GGUFFile(sample) as f:
        needed = max(t.offset + t.nbytes for t in f.tensors.values())
    for cut in list(range(0, f.data_offset + 1)) + list(range(f.data_offset + 1, needed, 37)):
        with pytest.raises(GGUFError):
            open_bytes(tmp_path, data[:cut])
    open_bytes(tmp_path, data[:needed]).close()  # trailing padding after the last tensor is optional


def test_random_bytes_and_mutations_raise_only_gguf_error(tmp_path, sample):
    rng = np.random.default_rng(0)
    for n in (1, 23, 24, 100, 5000):
        with pytest.raises(GGUFError):
            open_bytes(tmp_path, rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        with pytest.raises(GGUFError):
            open_bytes(tmp_path, b"GGUF\x03\x00\x00\x00" + rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    data = np.frombuffer(sample.read_bytes(), np.uint8)
    with GGUFFile(sample) as f:
        header_end = f.data_offset
    opened = 0
    for _ in range(300):  # flip a few header bytes: either the file still opens or GGUFError, nothing else
        mutated = data.copy()
        at = rng.integers(0, header_end, rng.integers(1, 4))
        mutated[at] = rng.integers(0, 256, at.size)
        try:
            open_bytes(tmp_path, mutated.tobytes()).close()
            opened += 1
        except GGUFError:
            pass
    assert opened < 300


def test_open_gguf_reports_os_errors(tmp_path):
    with pytest.raises(GGUFError, match="missing.gguf"):
        open_gguf(tmp_path / "missing.gguf")
    with pytest.raises(GGUFError, match=str(tmp_path)):
        open_gguf(tmp_path)
