"""Reading importance matrices in llama.cpp's two formats, as llama-quantize reads them.

GGUF (llama-imatrix's default): general.type "imatrix"; keys imatrix.datasets (string array), imatrix.chunk_count,
imatrix.chunk_size (u32); per weight matrix NAME two F32 tensors: NAME.in_sum2, shape [n_mat, ne0] (the sum of x^2
per input column, per expert), and NAME.counts, shape [n_mat, 1] (tokens seen). The importance of a column is
in_sum2 / count, or 1 where the count is 0.
Legacy .dat: i32 n_entries; per entry i32 name length, the name, i32 ncall, i32 nval, f32[nval] (the mean already
multiplied by ncall); then optionally i32 chunk count, i32 dataset-name length, the name. Importance: value / ncall.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

from kvant.formats.gguf_file import GGUFError, GGUFFile

from .recipes import requires_imatrix

IN_SUM2, COUNTS = ".in_sum2", ".counts"


class ImatrixError(ValueError):
    """An importance-matrix file that cannot be read (one readable sentence)."""


@dataclass
class ImportanceMatrix:
    values: dict[str, np.ndarray]  # GGUF tensor name -> float32 (n_mat * ne0,): mean x^2 per input column
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False
    path: str = ""

    def __len__(self) -> int:
        return len(self.values)

    def get(self, name: str) -> np.ndarray | None:
        return self.values.get(name)


def read_imatrix(path: str) -> ImportanceMatrix:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ImatrixError(f"cannot read importance matrix {path}: {e.strerror or e}") from None
    if magic == b"GGUF":
        return _read_gguf(path)
    return _read_legacy(path)


def open_imatrix_gguf(path: str) -> GGUFFile:
    """The GGUF file of an importance matrix; a malformed one is an ImatrixError."""
    try:
        return GGUFFile(path)
    except GGUFError as e:
        raise ImatrixError(f"bad importance matrix: {e}") from None


def _read_gguf(path: str) -> ImportanceMatrix:
    with open_imatrix_gguf(path) as g:
        md = g.metadata
        if not all(k in md for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")):
            raise ImatrixError(f"{path}: missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, "
                               f"imatrix.chunk_size); is it an importance matrix?")
        sums, counts = {}, {}
        for name, info in g.tensors.items():
            for suffix, into in ((IN_SUM2, sums), (COUNTS, counts)):
                if name.endswith(suffix):
                    if info.ggml_type.name != "F32":
                        raise ImatrixError(f"{path}: {name} must be F32, is {info.ggml_type.name}")
                    into[name[:-len(suffix)]] = g.raw(name).view(np.float32).reshape(info.shape).copy()
        if not sums:
            raise ImatrixError(f"{path}: no {IN_SUM2} tensors")
        values = {}
        for name in sorted(set(sums) | set(counts)):
            if name not in sums or name not in counts:
                raise ImatrixError(f"{path}: mismatched sums and counts for {name}")
            s = sums[name].reshape(-1)
            c = np.floor(counts[name].reshape(-1).astype(np.float64) + 0.5)  # llama.cpp: std::lround (counts >= 0)
            n_mat = c.size
            if n_mat == 0 or s.size % n_mat:
                raise ImatrixError(f"{path}: {name} has {s.size} sums for {n_mat} counts")
            per = s.reshape(n_mat, -1)
            cnt = c.astype(np.float32)[:, None]
            safe = np.where(cnt > 0, cnt, np.float32(1))
            values[name] = np.where(cnt > 0, per / safe, np.float32(1)).astype(np.float32).reshape(-1)
        datasets = md["imatrix.datasets"]
        return ImportanceMatrix(values, list(datasets) if isinstance(datasets, list) else [str(datasets)],
                                int(md["imatrix.chunk_count"]), int(md["imatrix.chunk_size"]), False, path)


def _read_legacy(path: str) -> ImportanceMatrix:
    with open(path, "rb") as f:
        data = f.read()
    size, pos = len(data), 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > size:
            raise ImatrixError(f"{path}: truncated importance matrix ({what} at byte {pos} needs {n} bytes, "
                               f"{size - pos} remain)")
        out = data[pos:pos + n]
        pos += n
        return out

    def i32(what: str) -> int:
        return struct.unpack("<i", take(4, what))[0]

    n_entries = i32("the entry count")
    if n_entries < 1:
        raise ImatrixError(f"{path}: not an importance matrix (neither GGUF nor a legacy .dat with entries)")
    values = {}
    for i in range(n_entries):
        n = i32(f"the name length of entry {i}")
        if n < 0 or n > 4096:
            raise ImatrixError(f"{path}: not an importance matrix (entry {i} has a name of {n} bytes)")
        name = take(n, f"the name of entry {i}").split(b"\0", 1)[0].decode("utf-8", "replace")
        ncall = i32(f"the call count of {name}")
        nval = i32(f"the value count of {name}")
        if nval < 1:
            raise ImatrixError(f"{path}: entry {name} has {nval} values")
        sums = np.frombuffer(take(4 * nval, f"the values of {name}"), dtype="<f4").astype(np.float32)
        values[name] = sums / np.float32(ncall) if ncall > 0 else sums.copy()
    chunk_count, datasets = 0, []
    if pos + 4 <= size:
        chunk_count = i32("the chunk count")
        if pos + 4 <= size:
            n = i32("the dataset name length")
            if 0 < n <= size - pos:
                datasets.append(take(n, "the dataset name").decode("utf-8", "replace"))
    return ImportanceMatrix(values, datasets, chunk_count, 0, True, path)


def check_imatrix_matches(imatrix: ImportanceMatrix, shapes: dict[str, tuple], types: dict[str, str],
                          preset: str) -> None:
    """Refuse, before anything is written, an importance matrix that does not belong to this model: one that
    names none of the tensors to quantize, has another size for one (llama-quantize's check), or lacks a tensor
    that cannot be quantized without it (llama-quantize's 'missing importance matrix' error)."""
    where = imatrix.path or "the importance matrix"
    if shapes and not any(imatrix.get(n) is not None for n in shapes):
        raise ImatrixError(f"{where} has none of this model's tensors (it is from another model?)")
    for name, shape in shapes.items():
        values = imatrix.get(name)
        if values is None:
            if requires_imatrix(name, types[name], preset):
                raise ImatrixError(f"{where} has no entry for {name}, which {types[name]} cannot be made "
                                      f"without (an importance matrix from another model?)")
            continue
        want = shape[-1] * (int(np.prod(shape[:-2])) if len(shape) > 2 else 1)
        if values.size != want and name != "token_embd.weight":
            raise ImatrixError(f"{where} has {values.size} values for {name}, the tensor needs {want} (an "
                                  f"importance matrix from another model?)")


def imatrix_metadata(im: ImportanceMatrix, file_arg: str) -> list[tuple[str, str, object]]:
    """The quantize.imatrix.* keys llama-quantize adds: (key, kind, value), kind "str" or "u32"."""
    out = [("quantize.imatrix.file", "str", file_arg[:127])]
    if im.datasets:
        out.append(("quantize.imatrix.dataset", "str", im.datasets[0][:127]))
    out.append(("quantize.imatrix.entries_count", "u32", len(im.values)))
    if im.chunk_count > 0:
        out.append(("quantize.imatrix.chunks_count", "u32", im.chunk_count))
    return out


def exists(path: str) -> bool:
    return os.path.isfile(path)
