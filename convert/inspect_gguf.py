"""`qconv inspect`: a GGUF file's metadata and tensor table, as text (like gguf-dump) or JSON."""
from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np

from kvant.formats import higgs_types
from kvant.formats.gguf_file import GGUFFile

ARRAY_HEAD = 8  # array items shown before the count


def _summary(value):
    """A JSON-able value; long arrays as {count, head}."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list):
        if len(value) > ARRAY_HEAD * 2:
            return {"count": len(value), "head": [_summary(v) for v in value[:ARRAY_HEAD]]}
        return [_summary(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value


def describe(path: str) -> dict:
    with GGUFFile(path) as g:
        tensors = [{"name": n, "shape": list(t.shape), "type": t.ggml_type.name, "bytes": t.nbytes,
                    "offset": t.offset} for n, t in g.tensors.items()]
        return {
            "path": path, "version": g.version, "alignment": g.alignment, "size": g.size,
            "metadata": {k: _summary(v) for k, v in g.metadata.items()},
            "tensors": tensors,
            "types": dict(Counter(t["type"] for t in tensors)),
            "kvant_only_types": sorted({t["type"] for t in tensors if higgs_types.is_higgs(t["type"])}),
            "parameters": int(sum(int(np.prod(t["shape"])) for t in tensors)),
        }


def _show(value) -> str:
    if isinstance(value, dict) and "count" in value:
        head = ", ".join(_show(v) for v in value["head"])
        return f"[{value['count']} items] [{head}, ...]"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        s = repr(value)
        return s if len(s) <= 120 else s[:117] + "...'"
    return repr(value)


def render_text(d: dict) -> str:
    lines = [f"{d['path']}: GGUF v{d['version']}, {len(d['metadata'])} key/value pairs, {len(d['tensors'])} tensors, "
             f"{d['parameters']:,} parameters, {d['size'] / 1e6:.2f} MB, alignment {d['alignment']}",
             "", "metadata:"]
    width = max((len(k) for k in d["metadata"]), default=0)
    lines += [f"  {k:<{width}} = {_show(v)}" for k, v in d["metadata"].items()]
    lines += ["", "tensors:"]
    nw = max((len(t["name"]) for t in d["tensors"]), default=4)
    lines.append(f"  {'#':>4}  {'name':<{nw}}  {'shape':<20}  {'type':<7}  {'bytes':>12}")
    for i, t in enumerate(d["tensors"]):
        shape = "x".join(str(s) for s in t["shape"])
        lines.append(f"  {i:>4}  {t['name']:<{nw}}  {shape:<20}  {t['type']:<7}  {t['bytes']:>12,}")
    lines.append("")
    lines.append("types: " + ", ".join(f"{k} {v}" for k, v in sorted(d["types"].items())))
    if d["kvant_only_types"]:
        lines.append(f"{', '.join(d['kvant_only_types'])}: kvant's own HIGGS types (version {higgs_types.VERSION}): "
                     f"this file runs only in kvant")
    return "\n".join(lines)


def render_json(d: dict) -> str:
    """Strict JSON: a NaN or infinite float in the metadata (JSON has neither) becomes its name as a string."""
    return json.dumps(_strict(d), ensure_ascii=False, indent=1, allow_nan=False)


def _strict(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _strict(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_strict(x) for x in v]
    return v
