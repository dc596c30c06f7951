"""Writing GGUF files: streamed one tensor at a time into a temp file beside the target, renamed when complete.

The layout is the one llama.cpp and the gguf package write (version 3, little-endian): header, key-value pairs,
tensor infos, padding to the alignment, then each tensor's bytes padded to the alignment. Metadata values are the
gguf package's GGUFValue (value, type, sub_type) with its typing rules, or RawValue: the type and value bytes copied
verbatim from another GGUF file (so `qconv quantize` keeps every key exactly as it was).

A failure at any point removes the temp file: an output path either holds a complete file or is left untouched.
"""
from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from math import prod

import numpy as np
from gguf import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GGUFValueType
from gguf.gguf_writer import GGUFValue

from kvant.formats.ggml_types import GGMLType, ggml_type


class OutputExistsError(FileExistsError):
    """The output file exists and --force was not given."""


@dataclass(frozen=True)
class RawValue:
    """A metadata value as stored in a GGUF file: u32 value type followed by the value's bytes."""
    data: bytes


_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d", GGUFValueType.BOOL: "<?",
}
_ARRAY_DTYPES = {
    GGUFValueType.UINT8: "<u1", GGUFValueType.INT8: "<i1", GGUFValueType.UINT16: "<u2", GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4", GGUFValueType.INT32: "<i4", GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.UINT64: "<u8", GGUFValueType.INT64: "<i8", GGUFValueType.FLOAT64: "<f8", GGUFValueType.BOOL: "u1",
}


def pack_string(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def pack_value(v: GGUFValue | RawValue) -> bytes:
    """Type and value bytes of one metadata value, with the gguf package's typing rules for arrays."""
    if isinstance(v, RawValue):
        return v.data
    vtype = GGUFValueType(v.type)
    out = struct.pack("<I", vtype)
    if vtype in _SCALAR_FORMATS:
        return out + struct.pack(_SCALAR_FORMATS[vtype], v.value)
    if vtype == GGUFValueType.STRING:
        return out + pack_string(v.value)
    if vtype != GGUFValueType.ARRAY:
        raise ValueError(f"cannot write a metadata value of type {vtype!r}")
    items = v.value
    if len(items) == 0:
        raise ValueError("a GGUF metadata array cannot be empty")
    if v.sub_type is not None:
        etype = GGUFValueType(v.sub_type)
    elif isinstance(items, (bytes, bytearray)):
        etype = GGUFValueType.UINT8
    elif isinstance(items, np.ndarray):
        etype = {"f": GGUFValueType.FLOAT32, "b": GGUFValueType.BOOL}.get(items.dtype.kind, GGUFValueType.INT32)
    else:
        etype = GGUFValueType.get_type(items[0])
        if any(GGUFValueType.get_type(x) is not etype for x in items):
            raise ValueError("all items of a GGUF metadata array must have the same type")
    out += struct.pack("<IQ", etype, len(items))
    if etype == GGUFValueType.STRING:
        return out + b"".join(pack_string(x) for x in items)
    if etype == GGUFValueType.ARRAY:
        raise ValueError("nested GGUF metadata arrays are not written by kvant")
    return out + np.asarray(items).astype(_ARRAY_DTYPES[etype]).tobytes()


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # numpy order: shape[-1] is the row length (ggml ne0)
    ggml_type: GGMLType

    @property
    def nbytes(self) -> int:
        return prod(self.shape[:-1]) * self.ggml_type.row_bytes(self.shape[-1])


def _pad(n: int, align: int) -> int:
    return (align - n % align) % align


class GGUFWriter:
    """Streamed, atomic GGUF output. Use as a context manager:

        with GGUFWriter(path, metadata, tensors, force=False) as w:
            for spec in tensors:
                w.write_tensor(spec.name, data)   # uint8 (rows, row_bytes) or float32 for F32
                # or w.write_tensor_parts(spec.name, slabs): the same bytes in consecutive pieces
    The file appears at `path` only when the block ends without an exception and every tensor was written.
    """

    def __init__(self, path: str, metadata: list[tuple[str, GGUFValue | RawValue]], tensors: list[TensorSpec], *,
                 force: bool = False, alignment: int = GGUF_DEFAULT_ALIGNMENT):
        self.path = os.path.abspath(path)
        if os.path.isdir(self.path):
            raise OutputExistsError(f"{path} is a directory")
        if os.path.exists(self.path) and not force:
            raise OutputExistsError(f"{path} exists (use --force to overwrite it)")
        keys = [k for k, _ in metadata]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate metadata keys")
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise ValueError("duplicate tensor names")
        self.metadata, self.tensors, self.alignment, self.force = metadata, tensors, alignment, force
        self._next = 0
        self._file = None
        self._tmp = None

    def __enter__(self) -> GGUFWriter:
        directory = os.path.dirname(self.path)
        fd, self._tmp = temp_beside(self.path)
        self._file = os.fdopen(fd, "wb")
        self._file.write(self._header())
        return self

    def _header(self) -> bytes:
        parts = [struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(self.tensors), len(self.metadata))]
        for key, value in self.metadata:
            parts.append(pack_string(key))
            parts.append(pack_value(value))
        offset = 0
        for t in self.tensors:
            ne = tuple(reversed(t.shape))
            parts.append(pack_string(t.name))
            parts.append(struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, t.ggml_type.id, offset))
            offset += t.nbytes + _pad(t.nbytes, self.alignment)
        head = b"".join(parts)
        return head + b"\0" * _pad(len(head), self.alignment)

    def write_tensor(self, name: str, data: np.ndarray) -> None:
        self.write_tensor_parts(name, (data,))

    def write_tensor_parts(self, name: str, parts: Iterable[np.ndarray]) -> None:
        """The next tensor as consecutive pieces (slabs of rows), each written as it comes, so that the whole of a big
        tensor is never in memory at once."""
        if self._next >= len(self.tensors):
            raise ValueError(f"tensor {name!r} was not declared")
        spec = self.tensors[self._next]
        if spec.name != name:
            raise ValueError(f"expected tensor {spec.name!r} next, got {name!r}")
        written = 0
        for part in parts:
            buf = memoryview(np.ascontiguousarray(part)).cast("B")
            written += buf.nbytes
            if written > spec.nbytes:
                break
            self._file.write(buf)
        if written != spec.nbytes:
            raise ValueError(f"tensor {name!r}: {'at least ' if written > spec.nbytes else ''}{written} bytes given, "
                             f"{spec.ggml_type.name} {list(spec.shape)} takes {spec.nbytes}")
        self._file.write(b"\0" * _pad(spec.nbytes, self.alignment))
        self._next += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self._next != len(self.tensors):
                    raise ValueError(f"only {self._next} of {len(self.tensors)} tensors were written")
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                if os.path.exists(self.path) and not self.force:
                    raise OutputExistsError(f"{self.path} appeared while writing (use --force to overwrite it)")
                public_mode(self._tmp)
                os.replace(self._tmp, self.path)
                self._tmp = None
        finally:
            if self._file is not None and not self._file.closed:
                self._file.close()
            if self._tmp is not None and os.path.exists(self._tmp):
                os.unlink(self._tmp)


def tensor_spec(name: str, shape, type_) -> TensorSpec:
    return TensorSpec(name, tuple(int(d) for d in shape), ggml_type(type_))


def temp_beside(path: str):
    """(fd, name) of a new hidden file beside path that a writer fills and then renames onto it:
    .NAME.PID.RANDOM.part. Such files of writers that are gone (killed before they could remove theirs) are removed
    first, so an interrupted run leaves nothing behind once the same output is written again."""
    directory, base = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    prefix = f".{base}."
    try:
        names = os.listdir(directory)
    except OSError:
        names = []
    for name in names:
        pid = name[len(prefix):].split(".", 1)[0] if name.startswith(prefix) and name.endswith(".part") else ""
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass
    return tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=".part", dir=directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # another user's process
        return True
    return True


def public_mode(path: str) -> None:
    """The mode a plainly created file gets (0666 less the umask), as llama.cpp's fopen/ofstream give; a temp file
    from mkstemp starts as 0600."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
