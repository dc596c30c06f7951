"""Reading GGUF files: a fast header parser over a read-only memory map, validated once at open.

Layout (gguf spec, little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv x (string key,
u32 value type, value); n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset relative
to the data section); padding to `general.alignment`; the data section. A string is u64 length + UTF-8 bytes; an
array is u32 element type + u64 count + elements (arrays may nest).

Everything the kernels later rely on is checked here: once the file is open, every tensor's bytes lie inside the
map and its rows are whole blocks of a known type. String arrays (a tokenizer's 262,144 tokens) are scanned in one
numba pass and decoded with one UTF-8 decode, so opening stays well under a second.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from math import prod

import numpy as np
from gguf import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUFValueType, Keys
from numba import njit

from .ggml_types import TYPES, GGMLType
from .higgs_types import HiggsFileError, check_metadata as check_higgs_metadata


class GGUFError(ValueError):
    """A file that is not a valid GGUF file (one readable sentence, carrying the offending values)."""


SUPPORTED_VERSIONS = (2, 3)
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 16  # arrays of arrays nest at most this deep (real files use 1 or 2)

# GGUF scalar value types as struct codes (little-endian, standard sizes; numpy reads the same codes);
# STRING and ARRAY are parsed separately.
_SCALAR_CODES: dict[int, str] = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT32: "f", GGUFValueType.FLOAT64: "d", GGUFValueType.BOOL: "B",
}
_STRUCT = {t: struct.Struct("<" + c) for t, c in _SCALAR_CODES.items()}
_SCALAR_DTYPES = {t: np.dtype("<" + c) for t, c in _SCALAR_CODES.items()}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_HEADER = struct.Struct("<IIQQ")  # magic, version, n_tensors, n_kv
# The fewest bytes one item can take, for rejecting absurd counts before looping over them.
_MIN_KV_BYTES = 8 + 4 + 1  # empty key, type, one-byte value
_MIN_TENSOR_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one dim, type, offset
_MIN_ITEM_BYTES = {**{t: dt.itemsize for t, dt in _SCALAR_DTYPES.items()},
                   GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 4 + 8}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: shape[-1] = ne0 = the length of one row in the file
    ggml_type: GGMLType
    offset: int  # absolute, in bytes from the start of the file
    nbytes: int

    @property
    def n_rows(self) -> int:
        return prod(self.shape[:-1])

    @property
    def row_bytes(self) -> int:
        return self.ggml_type.row_bytes(self.shape[-1])


@njit(cache=True)
def _walk_strings(buf, pos, count):
    """Walk `count` length-prefixed strings from `pos`: (end, -1), or (position, index) of the first string that
    runs past the end of `buf`. Allocates nothing, so an absurd count costs no memory."""
    n = buf.shape[0]
    for i in range(count):
        if pos + 8 > n or buf[pos + 7] != 0:  # a length >= 2**56 cannot fit in any file
            return pos, i
        length = np.int64(0)
        for k in range(7):
            length |= np.int64(buf[pos + k]) << (8 * k)
        if length > n - pos - 8:
            return pos, i
        pos += 8 + length
    return pos, -1


@njit(cache=True)
def _string_spans(buf, pos, count):
    """Start and length of each of `count` strings known to lie inside `buf`, and a histogram of their bytes."""
    starts = np.empty(count, np.int64)
    lengths = np.empty(count, np.int64)
    hist = np.zeros(256, np.int64)
    for i in range(count):
        length = np.int64(0)
        for k in range(7):
            length |= np.int64(buf[pos + k]) << (8 * k)
        pos += 8
        starts[i] = pos
        lengths[i] = length
        for k in range(pos, pos + length):
            hist[buf[k]] += 1
        pos += length
    return starts, lengths, hist


@njit(cache=True)
def _join_strings(buf, starts, lengths, sep):
    """The strings' bytes back to back, separated by the byte `sep`."""
    count = starts.shape[0]
    out = np.empty(max(lengths.sum() + count - 1, 0), np.uint8)
    o = 0
    for i in range(count):
        if i:
            out[o] = sep
            o += 1
        for j in range(lengths[i]):     # a loop: numba's slice assignment adds 3 s of compile
            out[o + j] = buf[starts[i] + j]
        o += lengths[i]
    return out


class _Cursor:
    """Reads little-endian values from the map at a moving position; every read is bounds-checked."""

    def __init__(self, mm: mmap.mmap, buf: np.ndarray, path: str):
        self.mm, self.buf, self.path = mm, buf, path
        self.size = len(mm)
        self.pos = 0

    def need(self, n: int, what: str) -> int:
        if n > self.size - self.pos:
            raise GGUFError(f"{self.path}: truncated file: {what} at offset {self.pos} needs {n} bytes, "
                            f"only {self.size - self.pos} remain")
        pos = self.pos
        self.pos += n
        return pos

    def scalar(self, st: struct.Struct, what: str):
        return st.unpack_from(self.mm, self.need(st.size, what))[0]

    def u32(self, what: str) -> int:
        return self.scalar(_U32, what)

    def u64(self, what: str) -> int:
        return self.scalar(_U64, what)

    def string(self, what: str) -> str:
        n = self.u64(f"the length of {what}")
        pos = self.need(n, f"{what} ({n} bytes)")
        try:
            return self.mm[pos:pos + n].decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(f"{self.path}: {what} at offset {pos} is not valid UTF-8 ({e.reason})") from None

    def check_count(self, count: int, item_bytes: int, what: str) -> None:
        if count * item_bytes > self.size - self.pos:
            raise GGUFError(f"{self.path}: {what} claims {count} items, but the {self.size - self.pos} bytes "
                            f"left in the file could hold at most {(self.size - self.pos) // item_bytes}")

    def value(self, vtype: int, what: str):
        if vtype == GGUFValueType.STRING:
            return self.string(what)
        if vtype == GGUFValueType.ARRAY:
            return self.array(what)
        st = _STRUCT.get(vtype)
        if st is None:
            raise GGUFError(f"{self.path}: {what} has unknown value type {vtype}")
        v = self.scalar(st, what)
        return bool(v) if vtype == GGUFValueType.BOOL else v

    def array(self, what: str, depth: int = 1):
        if depth > MAX_ARRAY_DEPTH:
            raise GGUFError(f"{self.path}: {what} nests arrays more than {MAX_ARRAY_DEPTH} deep")
        etype = self.u32(f"the element type of {what}")
        count = self.u64(f"the length of {what}")
        if etype not in _MIN_ITEM_BYTES:
            raise GGUFError(f"{self.path}: {what} has unknown element type {etype}")
        self.check_count(count, _MIN_ITEM_BYTES[etype], what)
        if etype == GGUFValueType.STRING:
            return self.string_array(count, what)
        if etype == GGUFValueType.ARRAY:
            return [self.array(f"{what}[{i}]", depth + 1) for i in range(count)]
        dt = _SCALAR_DTYPES[etype]
        pos = self.need(count * dt.itemsize, what)
        arr = self.buf[pos:pos + count * dt.itemsize].view(dt).copy()  # a copy: metadata must not pin the map
        return arr != 0 if etype == GGUFValueType.BOOL else arr

    def string_array(self, count: int, what: str) -> list[str]:
        end, bad = _walk_strings(self.buf, self.pos, count)
        if bad >= 0:
            self.pos = int(end)
            self.string(f"{what}[{bad}]")  # raises the truncation error with the exact position
        starts, lengths, hist = _string_spans(self.buf, self.pos, count)
        self.pos = int(end)
        if count == 0:
            return []
        free = np.flatnonzero(hist[:128] == 0)  # an ASCII byte that no string contains separates them all
        if len(free):
            sep = int(free[0])
            try:
                parts = str(_join_strings(self.buf, starts, lengths, sep), "utf-8").split(chr(sep))
            except UnicodeDecodeError:
                parts = None  # found below, string by string
            if parts is not None and len(parts) == count:
                return parts
        out = []
        for i, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
            try:
                out.append(self.mm[s:s + n].decode("utf-8"))
            except UnicodeDecodeError as e:
                raise GGUFError(f"{self.path}: {what}[{i}] at offset {s} is not valid UTF-8 ({e.reason})") from None
        return out


class GGUFFile:
    """A GGUF file, memory-mapped read-only and validated once. Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._mm = None
        self._buf = None
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < _HEADER.size:
                raise GGUFError(f"{self.path}: file too small for a GGUF header ({size} bytes, "
                                f"need at least {_HEADER.size})")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        self._buf = np.frombuffer(self._mm, dtype=np.uint8)
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    # ---- parsing and validation ----
    def _parse(self) -> None:
        cur = _Cursor(self._mm, self._buf, self.path)
        magic, version, n_tensors, n_kv = _HEADER.unpack_from(self._mm, cur.need(_HEADER.size, "the header"))
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (magic {self._mm[:4]!r}, expected b'GGUF')")
        if version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            hint = " (a big-endian file, which kvant does not read)" if swapped in SUPPORTED_VERSIONS else ""
            raise GGUFError(f"{self.path}: unsupported GGUF version {version}{hint}; "
                            f"supported versions are {', '.join(map(str, SUPPORTED_VERSIONS))}")
        self.version = version
        cur.check_count(n_kv, _MIN_KV_BYTES, "the header's key-value count")
        cur.check_count(n_tensors, _MIN_TENSOR_BYTES, "the header's tensor count")

        metadata: dict = {}
        for i in range(n_kv):
            key = cur.string(f"key {i}")
            if key in metadata:
                raise GGUFError(f"{self.path}: duplicate key {key!r} (key-value pair {i})")
            metadata[key] = cur.value(cur.u32(f"the value type of {key!r}"), repr(key))
        self.metadata = metadata

        alignment = metadata.get(Keys.General.ALIGNMENT, GGUF_DEFAULT_ALIGNMENT)
        if (not isinstance(alignment, int) or isinstance(alignment, bool)
                or alignment <= 0 or alignment & (alignment - 1)):
            raise GGUFError(f"{self.path}: {Keys.General.ALIGNMENT} is {alignment!r}, not a power of two")
        self.alignment = alignment

        raw_infos = []
        names = set()
        for i in range(n_tensors):
            name = cur.string(f"the name of tensor {i}")
            if name in names:
                raise GGUFError(f"{self.path}: duplicate tensor name {name!r} (tensor {i})")
            names.add(name)
            n_dims = cur.u32(f"the dimension count of {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFError(f"{self.path}: tensor {name!r} has {n_dims} dimensions, expected 1 to {MAX_DIMS}")
            ne = struct.unpack_from(f"<{n_dims}Q", self._mm, cur.need(8 * n_dims, f"the shape of {name!r}"))
            type_id = cur.u32(f"the type of {name!r}")
            rel = cur.u64(f"the data offset of {name!r}")
            raw_infos.append((name, ne, type_id, rel))

        self.data_offset = -(-cur.pos // alignment) * alignment
        self.tensors = {name: self._tensor_info(name, ne, type_id, rel) for name, ne, type_id, rel in raw_infos}
        try:        # kvant's own HIGGS types: their codes index the grids the file names
            check_higgs_metadata(metadata, {t.ggml_type.name for t in self.tensors.values()}, self.path)
        except HiggsFileError as e:
            raise GGUFError(str(e)) from None

    def _tensor_info(self, name: str, ne: tuple[int, ...], type_id: int, rel: int) -> TensorInfo:
        where = f"{self.path}: tensor {name!r}"
        if min(ne) <= 0:
            raise GGUFError(f"{where} has shape (ne) {list(ne)} with a dimension that is not positive")
        gt = TYPES.get(type_id)
        if gt is None:
            raise GGUFError(f"{where} has unknown ggml type id {type_id}")
        if ne[0] % gt.block_size:
            raise GGUFError(f"{where} of type {gt.name} has rows of {ne[0]} elements, "
                            f"not a multiple of the block size {gt.block_size}")
        if rel % self.alignment:
            raise GGUFError(f"{where} has data offset {rel}, not a multiple of the alignment {self.alignment}")
        nbytes = prod(ne[1:]) * gt.row_bytes(ne[0])
        offset = self.data_offset + rel
        if offset + nbytes > self.size:
            raise GGUFError(f"{where} ({nbytes} bytes at offset {offset}) extends past the end of the file "
                            f"({self.size} bytes)")
        return TensorInfo(name, tuple(reversed(ne)), gt, offset, nbytes)

    # ---- access ----
    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a uint8 (rows, row_bytes) view into the map (read-only, no copy)."""
        t = self._info(name)
        return self._buf[t.offset:t.offset + t.nbytes].reshape(t.n_rows, t.row_bytes)

    def release(self, name: str) -> None:
        """Drop the tensor's mapped pages from resident memory; they are read back from disk if touched again."""
        t = self._info(name)
        page = mmap.PAGESIZE
        start = -(-t.offset // page) * page  # whole pages inside the tensor only: neighbours keep theirs
        end = (t.offset + t.nbytes) // page * page
        if end > start and hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)

    def _info(self, name: str) -> TensorInfo:
        if self._buf is None:
            raise ValueError(f"{self.path}: the GGUF file is closed")
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in {self.path}") from None

    def close(self) -> None:
        """Unmap the file. If views returned by raw() are still alive, the map lives on until they are gone."""
        self._buf = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # exported views still point into it; it is unmapped when the last one is freed
            self._mm = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFFile({self.path!r}, version={getattr(self, 'version', None)}, "
                f"{len(getattr(self, 'tensors', {}))} tensors)")


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """GGUFFile(path), with a missing or unreadable file reported as a GGUFError naming the path."""
    try:
        return GGUFFile(path)
    except OSError as e:
        raise GGUFError(f"cannot open {os.fspath(path)}: {e.strerror or e}") from None
