"""Hugging Face directory -> GGUF, in one pass, one tensor in memory at a time.

    open and validate (config, architecture, every shard header, tokenizer)
    -> plan: GGUF name, shape and type of every tensor (architecture table + preset rules)
    -> metadata: general.*, the architecture's keys, the tokenizer
    -> stream: read a slab of a tensor's rows, transform it (permute, +1, ternarize), quantize, write; next slab,
       next tensor
    -> rename the finished temp file over the output.

Two layouts, so that kvant's output is byte-identical with llama.cpp's tools where those are deterministic:
  - F32, F16, BF16, Q8_0, TQ1_0, TQ2_0 (the --outtype values of llama.cpp's convert_hf_to_gguf.py): its tensor
    order (shards in file name order, tensors by name within each), its key order and its type rules (for TQ1_0 and
    TQ2_0 that means F16 token embedding and output, where llama-quantize would choose Q6_K / Q4_K);
  - every other preset: what convert_hf_to_gguf.py --outtype f32 followed by llama-quantize gives: tensors sorted by
    layer then name, general.quantization_version and general.file_type moved to the end, llama-quantize's types.
`qconv quantize` always follows llama-quantize.
"""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import numpy as np

from . import archs, codec, recipes
from .archs import Arch, NameMap
from .gguf_writer import GGUFWriter, tensor_spec
from .imatrix import ImportanceMatrix, check_imatrix_matches, imatrix_metadata
from .hf import HFModel, ModelDirError, open_model_dir, rope_parameters
from .progress import tensor_progress
from .safetensors_io import to_f32
from .vocab import write_vocab

CONVERTER_PRESETS = recipes.CONVERTER_PRESETS  # the --outtype values of llama.cpp's converter: its layout, its rules
# gguf.GGUFWriter, used here as a typed key collector, warns when a key is set twice; llama.cpp's gemma3 converter
# sets several keys twice on purpose (the later value wins, in the first one's place), and so does kvant.
logging.getLogger("gguf.gguf_writer").setLevel(logging.ERROR)
# A tensor is converted in slabs of rows of about this many float32 bytes, so that memory stays bounded by a slab,
# not by the largest tensor (gemma-3's 262144 x 640 embedding is 671 MB as float32).
SLAB_BYTES = 32 << 20


@dataclass
class Planned:
    name: str  # GGUF name
    source: str | None  # HF name, None for a generated tensor
    shape: tuple[int, ...]  # as written: fewer rows than the source's for gemma3's out-of-vocabulary embedding rows
    type: str = "F32"
    transforms: list = field(default_factory=list)  # archs.Transform, in order
    data: np.ndarray | None = None  # a generated tensor's values


@dataclass
class ConversionPlan:
    model: HFModel
    arch: Arch
    preset: str
    tensors: list[Planned]  # in output order
    metadata: list
    facts: recipes.ModelFacts


def model_facts(arch: Arch, config: dict) -> recipes.ModelFacts:
    n_layer = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    return recipes.ModelFacts(arch.name, n_layer, n_head, n_kv, int(config.get("num_experts") or 0),
                              arch.name == "llama" and n_layer == 80 and n_head != n_kv)


def auto_preset(model: HFModel) -> str:
    """llama.cpp's --outtype auto: the 16-bit float type of the first 2-D tensor (bf16 -> BF16, else F16)."""
    for e in model.checkpoint.entries.values():
        if len(e.shape) >= 2:
            return "BF16" if e.dtype == "BF16" else "F16"
    return "F16"


def open_model(path: str) -> tuple[HFModel, Arch]:
    model = open_model_dir(path, check_architecture=archs.check_architecture)
    arch = archs.check_architecture(model.architecture)
    model.config = archs.apply_defaults(arch, model.config)
    model.rope = rope_parameters(model.config)
    return model, arch


def plan_tensors(model: HFModel, arch: Arch, n_vocab_real: int) -> list[Planned]:
    names = NameMap(arch, int(model.config["num_hidden_layers"]))
    planned = []
    factors = archs.llama3_rope_factors(model) if arch.gguf_arch == gguf.MODEL_ARCH.LLAMA else None
    if factors is not None:
        planned.append(Planned("rope_freqs.weight", None, factors.shape, data=factors))
    for hf_name, entry in model.checkpoint.entries.items():
        if archs.skipped(arch, hf_name):
            continue
        name = names.gguf_name(hf_name)
        if name is None:
            raise ModelDirError(f"cannot map tensor {hf_name!r} of {model.architecture} to a GGUF name")
        shape = entry.shape
        p = Planned(name, hf_name, shape, transforms=archs.transforms_for(arch, hf_name))
        if arch.gguf_arch == gguf.MODEL_ARCH.GEMMA3 and "embed_tokens.weight" in hf_name and n_vocab_real < shape[0]:
            p.shape = (n_vocab_real, *shape[1:])  # the first rows only
        planned.append(p)
    return planned


def _vocab_size(collector) -> int:
    tokens = collector.kv_data[0].get(gguf.Keys.Tokenizer.LIST)
    return len(tokens.value) if tokens is not None else 0


def build_plan(path: str, preset: str | None = None, overrides=(), has_imatrix: bool = False) -> ConversionPlan:
    model, arch = open_model(path)
    preset = recipes.resolve_preset(preset) if preset else auto_preset(model)
    converter_layout = preset in CONVERTER_PRESETS

    # the tokenizer first: its size decides gemma3's embedding rows
    vocab = gguf.GGUFWriter(path=None, arch=arch.name)
    if arch.before_vocab is not None:
        arch.before_vocab(vocab, model)
    kind = write_vocab(vocab, model, arch.vocab)
    if arch.after_vocab is not None:
        arch.after_vocab(vocab, model, kind)
    tensors = plan_tensors(model, arch, _vocab_size(vocab))
    model.tokenizer_json = None  # written into `vocab` now; a 262k-token tokenizer.json is hundreds of MB as objects

    facts = model_facts(arch, model.config)
    ins = [recipes.TensorIn(t.name, t.shape, "F32") for t in tensors]
    types = recipes.converter_types(ins, preset, overrides) if converter_layout else \
        recipes.plan_types(ins, preset, facts, overrides, has_imatrix=has_imatrix)
    for t in tensors:
        t.type = types[t.name]
    if not converter_layout:
        order = recipes.llama_quantize_order([t.name for t in tensors])
        by_name = {t.name: t for t in tensors}
        tensors = [by_name[n] for n in order]

    ftype = recipes.file_type(preset)
    meta = gguf.GGUFWriter(path=None, arch=arch.name)
    meta.add_type(gguf.GGUFType.MODEL)
    general_metadata(model, sum(int(np.prod(t.shape)) for t in tensors)).set_gguf_meta_model(meta)
    archs.common_params(meta, model, ftype if converter_layout else int(gguf.LlamaFileType.ALL_F32))
    if arch.params is not None:
        arch.params(meta, model)
    meta.add_quantization_version(gguf.GGML_QUANT_VERSION)
    kv = dict(meta.kv_data[0])
    for key, value in vocab.kv_data[0].items():
        if key != gguf.Keys.General.ARCHITECTURE:
            kv[key] = value
    if not converter_layout:  # llama-quantize re-sets these two: removed, then appended
        for key in (gguf.Keys.General.QUANTIZATION_VERSION, gguf.Keys.General.FILE_TYPE):
            kv.pop(key)
        w = gguf.GGUFWriter(path=None, arch=arch.name)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_file_type(ftype)
        kv.update((k, v) for k, v in w.kv_data[0].items() if k != gguf.Keys.General.ARCHITECTURE)
    check_consistent(kv, tensors)
    return ConversionPlan(model, arch, preset, tensors, list(kv.items()), facts)


def check_consistent(kv: dict, tensors: list[Planned]) -> None:
    """The metadata written describes the tensors written, as the runtime (kvant's and llama.cpp's loader) will
    check: a config.json that disagrees with its checkpoint is refused before any output exists."""
    from kvant.runtime.config import Config, UnsupportedModelError, check_shapes
    try:
        check_shapes({t.name: t.shape for t in tensors}, Config.from_metadata({k: v.value for k, v in kv.items()}))
    except UnsupportedModelError as e:
        raise ModelDirError(f"config.json does not match the checkpoint: {e}") from None


def general_metadata(model: HFModel, total_params: int) -> gguf.Metadata:
    """general.*: name, size label, licence, ... from the model card and config (the gguf package's heuristics,
    which llama.cpp's converter uses) and general.sampling.* from generation_config.json."""
    md = gguf.Metadata.load(None, Path(model.path), None, total_params)
    gen = model.generation_config or {}
    if md.sampling_penalty_repeat is None and "repetition_penalty" in gen:
        md.sampling_penalty_repeat = gen["repetition_penalty"]
    if md.name is None:
        md.name = model.name
    if md.size_label is None and total_params > 0:
        md.size_label = gguf.size_label(total_params, total_params, 0, 0)
    return md


def slab_rows(model: HFModel, p: Planned, slab_bytes: int) -> int:
    """Rows per slab: about slab_bytes of float32, a multiple of every transform's row group (one attention head
    for the q/k permutation); a 1-D tensor is one slab."""
    if len(p.shape) < 2:
        return max(1, p.shape[0])
    group = math.lcm(1, *(t.group(model, p.shape) for t in p.transforms if t.group is not None))
    rows = slab_bytes // (4 * math.prod(p.shape[1:])) // group * group
    return max(group, rows)


def tensor_slabs(model: HFModel, p: Planned, slab_bytes: int = SLAB_BYTES) -> Iterator[np.ndarray]:
    """The tensor as float32, transformed, in slabs of consecutive whole rows read one after the other from the
    checkpoint: never more of it in memory than a slab as stored and as float32. Arithmetic happens in the
    checkpoint's own precision for F16 (as llama.cpp's converter does it in torch), in float32 for F32 and BF16."""
    if p.data is not None:
        yield p.data
        return
    dtype = model.checkpoint.entries[p.source].dtype
    step, n_rows = slab_rows(model, p, slab_bytes), p.shape[0]  # the source's first n_rows rows

    def slabs(transforms, args) -> Iterator[np.ndarray]:
        for start in range(0, n_rows, step):
            x = model.checkpoint.read_rows(p.source, start, min(start + step, n_rows))
            x = x if dtype == "F16" else to_f32(x, dtype)
            for t, arg in zip(transforms, args):
                x = t.fn(x, arg)
            yield x

    args = []  # each transform's argument, measured (if it needs to) on the slabs as it will see them
    for k, t in enumerate(p.transforms):
        args.append(None if t.prepare is None else
                    t.prepare(model, p.shape, lambda k=k: slabs(p.transforms[:k], args[:k])))
    for x in slabs(p.transforms, args):
        yield np.ascontiguousarray(x, dtype=np.float32)


def encode(x: np.ndarray, type_name: str, imatrix: np.ndarray | None = None) -> np.ndarray:
    """float32 tensor -> the stored bytes of type_name, rows of the last axis."""
    rows = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
    return codec.quantize(rows, type_name, imatrix=imatrix)


def set_threads(n: int | None) -> None:
    if not n:
        return
    import numba
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def check_quantizable(types) -> None:
    missing = sorted({t for t in types if not codec.can_quantize(t)})
    if missing:
        raise codec.CannotQuantizeError(f"kvant cannot quantize to {', '.join(missing)} yet")


def convert(path: str, out: str, preset: str | None = None, overrides=(), imatrix: ImportanceMatrix | None = None,
            imatrix_arg: str | None = None, threads: int | None = None, force: bool = False,
            progress: bool = True, slab_bytes: int = SLAB_BYTES) -> ConversionPlan:
    """Convert a Hugging Face model directory to a GGUF file at `out`. Returns the plan it followed. Each tensor is
    read, transformed, encoded and written in slabs of rows of about slab_bytes as float32 (the bytes written do
    not depend on it)."""
    plan = build_plan(path, preset, overrides, has_imatrix=imatrix is not None)
    if imatrix is not None and plan.preset not in CONVERTER_PRESETS:  # what llama-quantize adds when given one
        from .requantize import _typed
        plan.metadata += [(k, _typed(kind, v)) for k, kind, v in imatrix_metadata(imatrix, imatrix_arg or imatrix.path)]
    from .requantize import _higgs_kv
    plan.metadata += _higgs_kv(t.type for t in plan.tensors)     # kvant's own HIGGS types pin their grids
    check_quantizable(t.type for t in plan.tensors)
    if imatrix is not None:
        check_imatrix_matches(imatrix, {t.name: t.shape for t in plan.tensors if t.type not in recipes.FLOAT_TYPES},
                              {t.name: t.type for t in plan.tensors}, plan.preset)
    set_threads(threads)
    specs = [tensor_spec(t.name, t.shape, t.type) for t in plan.tensors]
    total = sum(s.nbytes for s in specs)
    with GGUFWriter(out, plan.metadata, specs, force=force) as w, tensor_progress(total, progress) as tick:
        for p in plan.tensors:
            qw = imatrix_for(imatrix, p.name, p.shape[-1]) if imatrix is not None and p.type not in \
                recipes.FLOAT_TYPES else None
            w.write_tensor_parts(p.name, encoded_slabs(plan.model, p, qw, slab_bytes, tick))
    return plan


def encoded_slabs(model: HFModel, p: Planned, qw: np.ndarray | None, slab_bytes: int, tick) -> Iterator[np.ndarray]:
    for x in tensor_slabs(model, p, slab_bytes):
        q = encode(x, p.type, qw)
        tick(p.name, q.nbytes)
        yield q


def imatrix_for(imatrix: ImportanceMatrix, name: str, ne0: int) -> np.ndarray | None:
    """The importance weights for a tensor (llama.cpp looks them up by GGUF name and refuses a size mismatch,
    except for token_embd)."""
    values = imatrix.get(name)
    if values is None:
        return None
    if values.size != ne0:
        if name == "token_embd.weight":
            return None
        raise ValueError(f"importance matrix size {values.size} differs from the row length {ne0} of {name}")
    return values


def output_path(path: str, preset: str) -> str:
    base = os.path.basename(os.path.normpath(path)) or "model"
    return f"{base}-{preset}.gguf"

