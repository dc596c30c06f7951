"""The registry of ggml tensor types: id, name, elements per block, bytes per block.

Built from the gguf package's own tables (GGMLQuantizationType, GGML_QUANT_SIZES), never retyped, plus kvant's own
HIGGS types (formats/higgs_types.py: ids from 4096, outside ggml's range; files holding them run only in kvant).
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import gguf

from .higgs_types import BLOCK as HIGGS_BLOCK, HIGGS_TYPES


class UnknownTypeError(ValueError):
    """A ggml type id or name that the registry does not know."""


@dataclass(frozen=True)
class GGMLType:
    id: int
    name: str
    block_size: int  # elements per block
    type_size: int  # bytes per block

    def row_bytes(self, n_cols: int) -> int:
        """Bytes taken by one row of n_cols elements; n_cols must be a multiple of the block size."""
        if n_cols % self.block_size:
            raise ValueError(f"a row of {n_cols} elements is not a multiple of the {self.name} block size "
                             f"{self.block_size}")
        return n_cols // self.block_size * self.type_size

    def __str__(self) -> str:
        return self.name


TYPES: dict[int, GGMLType] = {
    int(q): GGMLType(int(q), q.name, *gguf.GGML_QUANT_SIZES[q])
    for q in gguf.GGMLQuantizationType if q in gguf.GGML_QUANT_SIZES
}
TYPES.update({tid: GGMLType(tid, name, HIGGS_BLOCK, size) for name, (tid, _, size) in HIGGS_TYPES.items()})
TYPES_BY_NAME: dict[str, GGMLType] = {t.name: t for t in TYPES.values()}


def ggml_type(id_or_name: int | str | GGMLType | gguf.GGMLQuantizationType) -> GGMLType:
    """Look a type up by id (int or GGMLQuantizationType), by name ("Q4_K", case-insensitive), or pass one through."""
    if isinstance(id_or_name, GGMLType):
        return id_or_name
    if isinstance(id_or_name, str):
        t = TYPES_BY_NAME.get(id_or_name.upper())
    elif isinstance(id_or_name, Integral) and not isinstance(id_or_name, bool):  # IntEnum, numpy ints too
        t = TYPES.get(int(id_or_name))
    else:
        t = None
    if t is None:
        raise UnknownTypeError(f"unknown ggml type {id_or_name!r}")
    return t
