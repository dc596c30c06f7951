"""A Hugging Face model directory: config.json, the safetensors checkpoint, tokenizer files, generation config.

Everything is read and validated when the directory is opened (config, every shard header, the tokenizer files'
presence), so that a bad input fails before any output exists. Tensor data is read later, one tensor at a time.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from .safetensors_io import Checkpoint

_MISSING = object()


class ModelDirError(ValueError):
    """A directory that is not a usable Hugging Face model (one readable sentence)."""


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ModelDirError(f"cannot read {what}: {e.strerror or e}") from None
    except ValueError as e:
        raise ModelDirError(f"{what} is not valid JSON ({e})") from None


def _optional_json(path: str, what: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    value = _read_json(path, what)
    return value if isinstance(value, dict) else None


@dataclass
class HFModel:
    """What a converter needs from a model directory. `config` is config.json with text_config merged in (as
    llama.cpp's converter does for multimodal wrappers); `rope` is the normalised rope parameters."""
    path: str
    config: dict
    architecture: str
    checkpoint: Checkpoint
    tokenizer_json: dict | None
    tokenizer_config: dict | None
    generation_config: dict | None
    spm_path: str | None
    rope: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    def find(self, keys, default=_MISSING):
        """The first of several synonymous config keys that is present (llama.cpp's find_hparam)."""
        for k in keys:
            if k in self.config:
                return self.config[k]
        if default is _MISSING:
            raise ModelDirError(f"config.json has none of {', '.join(keys)}")
        return default

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)


def rope_parameters(config: dict) -> dict:
    """Rope settings in one shape whatever the config's vintage: rope_theta at top level, in rope_scaling, or in
    rope_parameters (possibly per layer type: {"full_attention": {...}, "sliding_attention": {...}})."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    if "full_attention" in rope or "sliding_attention" in rope:
        return rope
    theta = next((config[k] for k in ("global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta",
                                      "rotary_emb_base") if k in config), None)
    local = next((config[k] for k in ("local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                                      "rope_local_base_freq") if k in config), None)
    if local is not None:
        rope["sliding_attention"] = {"rope_theta": local}
    if "rope_theta" not in rope and theta is not None:
        rope["rope_theta"] = theta
    if "rope_type" not in rope and rope.get("type") is not None:
        rope["rope_type"] = rope["type"]
    for k in ("partial_rotary_factor", "original_max_position_embeddings"):
        if k not in rope and k in config:
            rope[k] = config[k]
    return rope


def open_model_dir(path: str, check_architecture=None) -> HFModel:
    """Open and validate a model directory; check_architecture(name) may refuse the architecture before any
    weights are looked at."""
    if not os.path.isdir(path):
        raise ModelDirError(f"{path} is not a directory")
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise ModelDirError(f"no config.json in {path} (not a Hugging Face model directory)")
    config = _read_json(config_path, "config.json")
    if not isinstance(config, dict):
        raise ModelDirError("config.json is not a JSON object")
    if isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}
    archs = config.get("architectures")
    if not archs or not isinstance(archs, list) or not isinstance(archs[0], str):
        raise ModelDirError("config.json names no architecture (no \"architectures\" list)")
    if check_architecture is not None:
        check_architecture(archs[0])
    checkpoint = Checkpoint(path)
    tokenizer_json = _optional_json(os.path.join(path, "tokenizer.json"), "tokenizer.json")
    spm = os.path.join(path, "tokenizer.model")
    return HFModel(
        path=path, config=config, architecture=archs[0], checkpoint=checkpoint,
        tokenizer_json=tokenizer_json,
        tokenizer_config=_optional_json(os.path.join(path, "tokenizer_config.json"), "tokenizer_config.json"),
        generation_config=_optional_json(os.path.join(path, "generation_config.json"), "generation_config.json"),
        spm_path=spm if os.path.isfile(spm) else None,
        rope=rope_parameters(config),
    )
