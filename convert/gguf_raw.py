"""The key-value section of a GGUF file as raw bytes per key, for copying metadata verbatim (types included).

kvant.formats.gguf_file.GGUFFile validates the file and gives decoded values; this module only finds where each
value's bytes lie, so that `qconv quantize` writes every key back with its original type, as llama-quantize does.
Call it on a file GGUFFile has already opened successfully.
"""
from __future__ import annotations

import mmap
import struct

from gguf import GGUFValueType

from .gguf_writer import RawValue

_SIZES = {
    GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.UINT16: 2, GGUFValueType.INT16: 2,
    GGUFValueType.UINT32: 4, GGUFValueType.INT32: 4, GGUFValueType.FLOAT32: 4, GGUFValueType.BOOL: 1,
    GGUFValueType.UINT64: 8, GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8,
}
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


def _skip_value(mm, pos: int, vtype: int) -> int:
    if vtype in _SIZES:
        return pos + _SIZES[vtype]
    if vtype == GGUFValueType.STRING:
        return pos + 8 + _U64.unpack_from(mm, pos)[0]
    if vtype == GGUFValueType.ARRAY:
        etype = _U32.unpack_from(mm, pos)[0]
        count = _U64.unpack_from(mm, pos + 4)[0]
        pos += 12
        if etype in _SIZES:
            return pos + count * _SIZES[etype]
        for _ in range(count):
            pos = _skip_value(mm, pos, etype)
        return pos
    raise ValueError(f"unknown GGUF value type {vtype}")


def raw_metadata(path: str) -> list[tuple[str, RawValue]]:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        _magic, _version, _n_tensors, n_kv = struct.unpack_from("<IIQQ", mm, 0)
        pos = 24
        out = []
        for _ in range(n_kv):
            n = _U64.unpack_from(mm, pos)[0]
            key = mm[pos + 8:pos + 8 + n].decode("utf-8")
            pos += 8 + n
            start = pos
            vtype = _U32.unpack_from(mm, pos)[0]
            pos = _skip_value(mm, pos + 4, vtype)
            out.append((key, RawValue(bytes(mm[start:pos]))))
        return out
