"""GGUF -> GGUF with llama-quantize's rules (`qconv quantize`).

What llama-quantize does, and so kvant: every key-value pair is copied as it is (type and bytes), then
general.quantization_version and general.file_type are removed and appended (2, and the preset's file type), split
keys dropped, and with an importance matrix the quantize.imatrix.* keys appended; kvant.higgs.* keys are written
for the output's own HIGGS tensors (formats/higgs_types.py) and dropped otherwise. Tensors are written sorted by layer
then name; each gets the preset's type for it (kvant.convert.recipes); a tensor already of that type is copied
byte for byte, any other is decoded to float32 and encoded again. Re-encoding an already quantized tensor needs
allow_requantize, as in llama.cpp.
"""
from __future__ import annotations

from functools import partial
from typing import Iterator

import gguf
import numpy as np

from kvant.formats import higgs_types
from kvant.formats.gguf_file import GGUFFile

from . import codec, recipes
from .gguf_raw import raw_metadata
from .gguf_writer import GGUFWriter, RawValue, pack_value, tensor_spec
from .imatrix import ImportanceMatrix, check_imatrix_matches, imatrix_metadata
from .pipeline import SLAB_BYTES, check_quantizable, set_threads
from .progress import tensor_progress

SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
REPLACED_KEYS = (gguf.Keys.General.QUANTIZATION_VERSION, gguf.Keys.General.FILE_TYPE) + SPLIT_KEYS
FLOAT_INPUTS = ("F32", "F16", "BF16")


class RequantizeError(ValueError):
    """A quantized tensor that would be re-encoded without allow_requantize."""


def facts_from_metadata(md: dict) -> recipes.ModelFacts:
    arch = md.get("general.architecture")
    if not isinstance(arch, str):
        raise ValueError("the GGUF file has no general.architecture")

    def first(value, default):
        if value is None:
            return default
        return int(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else int(value)

    n_layer = first(md.get(f"{arch}.block_count"), None)
    if n_layer is None:
        raise ValueError(f"the GGUF file has no {arch}.block_count")
    n_head = first(md.get(f"{arch}.attention.head_count"), 1)
    n_kv = first(md.get(f"{arch}.attention.head_count_kv"), n_head)
    return recipes.ModelFacts(arch, n_layer, n_head, n_kv, first(md.get(f"{arch}.expert_count"), 0),
                              arch == "llama" and n_layer == 80 and n_head != n_kv)


def _typed(kind: str, value) -> RawValue:
    vtype = gguf.GGUFValueType.STRING if kind == "str" else gguf.GGUFValueType.UINT32
    from gguf.gguf_writer import GGUFValue
    return RawValue(pack_value(GGUFValue(value, vtype)))


def _higgs_kv(type_names) -> list[tuple[str, object]]:
    """The kvant.higgs.* keys the output needs for its HIGGS tensors (higgs_types), as GGUF values."""
    from gguf.gguf_writer import GGUFValue
    out = []
    for key, value in higgs_types.metadata(type_names):
        if isinstance(value, np.ndarray):
            out.append((key, GGUFValue(value, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32)))
        else:
            out.append((key, GGUFValue(int(value), gguf.GGUFValueType.UINT32)))
    return out


def quantize_gguf(src: str, dst: str, preset: str, overrides=(), imatrix: ImportanceMatrix | None = None,
                  imatrix_arg: str | None = None, allow_requantize: bool = False, threads: int | None = None,
                  force: bool = False, progress: bool = True, slab_bytes: int = SLAB_BYTES) -> dict[str, str]:
    """Requantize src into dst, each re-encoded tensor in slabs of rows of about slab_bytes as float32. Returns the
    type of each tensor written."""
    preset = recipes.resolve_preset(preset)
    with GGUFFile(src) as g:
        facts = facts_from_metadata(g.metadata)
        ins = [recipes.TensorIn(n, t.shape, t.ggml_type.name) for n, t in g.tensors.items()]
        types = recipes.plan_types(ins, preset, facts, overrides, has_imatrix=imatrix is not None)
        order = recipes.llama_quantize_order(g.tensors)
        changed = [n for n in order if types[n] != g.tensors[n].ggml_type.name]
        if not allow_requantize:
            quantized = [n for n in changed if g.tensors[n].ggml_type.name not in FLOAT_INPUTS]
            if quantized:
                t = g.tensors[quantized[0]].ggml_type.name
                raise RequantizeError(f"{quantized[0]} is already {t}; requantizing from {t} is disabled "
                                      f"(use --allow-requantize)")
        check_quantizable(types[n] for n in changed)
        if imatrix is not None:
            check_imatrix_matches(imatrix, {n: g.tensors[n].shape for n in changed}, types, preset)
        set_threads(threads)

        kv = [(k, v) for k, v in raw_metadata(src)
              if k not in REPLACED_KEYS and not k.startswith(higgs_types.KEY_PREFIX)]
        kv.append((gguf.Keys.General.QUANTIZATION_VERSION, _typed("u32", gguf.GGML_QUANT_VERSION)))
        kv.append((gguf.Keys.General.FILE_TYPE, _typed("u32", recipes.file_type(preset))))
        if imatrix is not None:
            kv += [(k, _typed(kind, v)) for k, kind, v in imatrix_metadata(imatrix, imatrix_arg or imatrix.path)]
        kv += _higgs_kv(types.values())
        specs = [tensor_spec(n, g.tensors[n].shape, types[n]) for n in order]
        total = sum(s.nbytes for s in specs)
        with GGUFWriter(dst, kv, specs, force=force, alignment=g.alignment) as w, \
                tensor_progress(total, progress) as tick:
            for spec in specs:
                info = g.tensors[spec.name]
                raw = g.raw(spec.name)
                if spec.ggml_type.name == info.ggml_type.name:
                    w.write_tensor(spec.name, raw)
                    tick(spec.name, spec.nbytes)
                else:
                    qw = _imatrix_rows(imatrix, spec.name, info.shape)
                    w.write_tensor_parts(spec.name, _encoded_slabs(raw, info.ggml_type, spec.ggml_type.name, qw,
                                                                   slab_bytes, partial(tick, spec.name)))
                g.release(spec.name)
    return {n: types[n] for n in order}


def _imatrix_rows(imatrix: ImportanceMatrix | None, name: str, shape) -> np.ndarray | None:
    """The importance weights of a tensor: one vector of ne0, or one per expert (3-D), or None."""
    if imatrix is None:
        return None
    values = imatrix.get(name)
    if values is None:
        return None
    ne0 = shape[-1]
    n_mat = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    if values.size != ne0 * n_mat:
        if name == "token_embd.weight":
            return None
        raise ValueError(f"imatrix size {values.size} is different from tensor size {ne0 * n_mat} for {name}")
    return values.reshape(n_mat, ne0)


def _encoded_slabs(raw: np.ndarray, src_type, type_name: str, qw: np.ndarray | None, slab_bytes: int,
                   tick) -> Iterator[np.ndarray]:
    """The tensor's rows (raw: rows x row_bytes) decoded to float32 and encoded again, in slabs of about slab_bytes
    of float32 that never cross a matrix of a 3-D tensor (each expert has its own importance weights): quantization
    is row by row, so the bytes are those of the whole tensor at once, and memory stays bounded by a slab."""
    n_rows, ne0 = raw.shape[0], raw.shape[1] // src_type.type_size * src_type.block_size
    n_mat = 1 if qw is None else qw.shape[0]
    rows_per_mat = n_rows // n_mat
    step = max(1, min(rows_per_mat, slab_bytes // (4 * ne0)))
    for m in range(n_mat):
        for r0 in range(m * rows_per_mat, (m + 1) * rows_per_mat, step):
            r1 = min(r0 + step, (m + 1) * rows_per_mat)
            x = codec.dequantize(raw[r0:r1], src_type, (r1 - r0, ne0))
            q = codec.quantize(x, type_name, imatrix=None if qw is None else qw[m])
            tick(q.nbytes)
            yield q
