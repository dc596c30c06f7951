"""Reading Hugging Face safetensors checkpoints lazily, one tensor at a time, validated up front.

A safetensors file is a little-endian u64 header length N, N bytes of JSON ({name: {dtype, shape, data_offsets:
[begin, end]}, "__metadata__": {...}}), then the data; offsets are relative to the end of the header. A checkpoint is
either one model.safetensors, or model.safetensors.index.json ({"weight_map": {tensor: shard file}}) plus its shards.

Every header is parsed and every tensor's extent checked against its file's size when the checkpoint is opened, so a
truncated shard fails before a single byte of output is written. Tensors are then read one at a time (one copy of
the tensor in memory, nothing else pinned), or a big one in slabs of rows (`read_rows`).
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from math import prod

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint directory or safetensors file that cannot be read (one readable sentence)."""


# safetensors dtype -> (numpy dtype of the stored elements, bytes per element). BF16 is kept as raw uint16.
DTYPES: dict[str, np.dtype] = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors library's own limit
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # safetensors dtype name: F32, F16, BF16
    shape: tuple[int, ...]
    path: str
    offset: int  # absolute, in bytes from the start of the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        return prod(self.shape)


def read_header(path: str) -> list[TensorEntry]:
    """Parse and validate one safetensors file's header; entries sorted by name (the order the safetensors library
    and llama.cpp's converter list them in)."""
    name = os.path.basename(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{name}: truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(f"{name}: truncated or corrupt safetensors file: the header claims {n} bytes "
                                      f"but the file has {size} bytes")
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{name}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name}: corrupt safetensors header (not a JSON object)")
    data_start = 8 + n
    entries = []
    for tname, meta in header.items():
        if tname == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = meta["dtype"], tuple(int(d) for d in meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{name}: corrupt safetensors header entry for tensor {tname!r}") from None
        if dtype not in DTYPES:
            raise CheckpointError(f"{name}: tensor {tname!r} has dtype {dtype}; kvant converts F32, F16 and BF16 "
                                  f"checkpoints")
        if any(d < 0 for d in shape) or not (0 <= begin <= end):
            raise CheckpointError(f"{name}: tensor {tname!r} has a bad shape {list(shape)} or extent {[begin, end]}")
        nbytes = prod(shape) * DTYPES[dtype].itemsize
        if end - begin != nbytes:
            raise CheckpointError(f"{name}: tensor {tname!r} of shape {list(shape)} {dtype} needs {nbytes} bytes "
                                  f"but its extent holds {end - begin}")
        if data_start + end > size:
            raise CheckpointError(f"{name}: truncated safetensors file: tensor {tname!r} ends at byte "
                                  f"{data_start + end} but the file has {size} bytes")
        entries.append(TensorEntry(tname, dtype, shape, path, data_start + begin, nbytes))
    entries.sort(key=lambda e: e.name)
    return entries


def checkpoint_files(model_dir: str) -> list[str]:
    """The safetensors files of a checkpoint directory, in llama.cpp's order (sorted file names)."""
    index = os.path.join(model_dir, INDEX_FILE)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                weight_map = json.load(f).get("weight_map")
        except (OSError, ValueError, AttributeError) as e:
            raise CheckpointError(f"cannot read {INDEX_FILE}: {e}") from None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{INDEX_FILE} has no weight_map")
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not os.path.isfile(os.path.join(model_dir, f))]
        if missing:
            raise CheckpointError(f"{INDEX_FILE} names shard(s) that are missing: {', '.join(missing)}")
        return [os.path.join(model_dir, f) for f in files]
    files = sorted(f for f in os.listdir(model_dir) if f.startswith("model") and f.endswith(".safetensors"))
    if not files:
        others = sorted(f for f in os.listdir(model_dir) if f.endswith((".bin", ".pt", ".pth", ".gguf")))
        hint = f" (found {', '.join(others)}: only safetensors checkpoints are supported)" if others else ""
        raise CheckpointError(f"no model.safetensors or {INDEX_FILE} in {model_dir}{hint}")
    return [os.path.join(model_dir, f) for f in files]


class Checkpoint:
    """All tensors of a safetensors checkpoint, indexed by name, read lazily."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.files = checkpoint_files(model_dir)
        self.entries: dict[str, TensorEntry] = {}
        for path in self.files:
            for e in read_header(path):
                if e.name in self.entries:
                    first = os.path.basename(self.entries[e.name].path)
                    raise CheckpointError(f"tensor {e.name!r} appears in both {first} and {os.path.basename(path)}")
                self.entries[e.name] = e
        self._check_index()

    def _check_index(self) -> None:
        index = os.path.join(self.model_dir, INDEX_FILE)
        if not os.path.isfile(index):
            return
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        missing = sorted(set(weight_map) - set(self.entries))
        if missing:
            raise CheckpointError(f"{len(missing)} tensor(s) listed in {INDEX_FILE} are missing from the shards "
                                  f"(first: {missing[0]!r} in {weight_map[missing[0]]})")

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def names(self) -> list[str]:
        return list(self.entries)

    def read(self, name: str) -> np.ndarray:
        """The tensor as stored (F32, F16, or BF16 as uint16 bits), one fresh array."""
        e = self.entries[name]
        if not e.shape:  # a scalar
            return self._read_into(e, np.empty((), dtype=DTYPES[e.dtype]), 0)
        return self.read_rows(name, 0, e.shape[0])

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of the tensor's first axis as stored, one fresh array (a slab of a big tensor)."""
        e = self.entries[name]
        out = np.empty((stop - start, *e.shape[1:]), dtype=DTYPES[e.dtype])
        return self._read_into(e, out, start * prod(e.shape[1:]) * out.itemsize)

    def _read_into(self, e: TensorEntry, out: np.ndarray, skip: int) -> np.ndarray:
        with open(e.path, "rb") as f:
            f.seek(e.offset + skip)
            got = f.readinto(memoryview(out.reshape(-1).view(np.uint8)))
        if got != out.nbytes:
            raise CheckpointError(f"{os.path.basename(e.path)}: truncated while reading tensor {e.name!r}")
        return out

    def read_f32(self, name: str) -> np.ndarray:
        """The tensor as float32 (BF16 and F16 widened exactly)."""
        return to_f32(self.read(name), self.entries[name].dtype)


def to_f32(data: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        wide = data.astype(np.uint32)
        wide <<= 16  # in place: one float32-sized array, not two
        return wide.view(np.float32)
    return data.astype(np.float32, copy=False)
