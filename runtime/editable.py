"""A loaded model whose weights can be changed in place: every matrix (and the token embedding) as writable float32,
for measuring how the loss answers to a change in one tensor (convert/allocate.py's sensitivities).

Each matrix is decoded once to float32 and multiplied by the F32 kernels from that memory; rows[name] is a writable
view of the named tensor's rows (a part of a stacked q/k/v or gate/up matrix, or of the tied output head, which then
also serves the embedding lookup), so a change to it is seen by the next forward pass. Costs 4 bytes a weight.
"""
from __future__ import annotations

import numpy as np

from kvant.formats.dequant import RowReader, dequantize
from kvant.runtime import kernels
from kvant.runtime.model import Layer, Transformer

EMBEDDING = "token_embd.weight"


def _matrix_slots(transformer: Transformer):
    """(holder object, attribute) of every QMatrix the forward pass reads."""
    for layer in transformer.layers:
        for attr in Layer.__dataclass_fields__:
            if isinstance(getattr(layer, attr), kernels.QMatrix):
                yield layer, attr
    yield transformer, "output"


class EditableWeights:
    def __init__(self, transformer: Transformer):
        self.rows: dict[str, np.ndarray] = {}
        file = transformer.file
        for holder, attr in _matrix_slots(transformer):
            qm = getattr(holder, attr)
            names = transformer.matrix_names[id(qm)]
            floats = np.empty(qm.shape, np.float32)
            start = 0
            for name in names:
                info = file.tensors[name]
                floats[start:start + info.n_rows] = dequantize(file.raw(name), info.ggml_type).reshape(
                    info.n_rows, -1)
                self.rows[name] = floats[start:start + info.n_rows]
                start += info.n_rows
            new = kernels.prepare(floats.view(np.uint8), "F32")      # multiplies these very bytes
            transformer.matrix_names[id(new)] = names
            setattr(holder, attr, new)
        if EMBEDDING not in self.rows:                                  # untied: the lookup table only
            info = file.tensors[EMBEDDING]
            self.rows[EMBEDDING] = dequantize(file.raw(EMBEDDING), info.ggml_type).reshape(info.n_rows, -1)
        transformer.embd_rows = RowReader(self.rows[EMBEDDING].view(np.uint8), "F32")
        transformer._steps = None                                       # decode steps hold the old matrices
