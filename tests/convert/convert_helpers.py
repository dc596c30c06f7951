"""Helpers shared by the converter tests: fixture paths, the oracle JSON, the fixture maker's describe_gguf."""
import hashlib
import importlib.util
import json
import os

import pytest
from shared_files import SHARED

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "convert")
# the six tiny checkpoints with transformers' logits, read where the project's shared fixtures live (CI has ../shared)
HF = os.path.join(SHARED, "fixtures", "hf-tiny")
if not os.path.isdir(HF):
    pytest.skip(f"the tiny HF checkpoints are not beside the repository ({HF})", allow_module_level=True)
MODELS = ("llama", "mistral", "qwen2", "qwen3", "gemma3", "bitnet")


def _load_maker():
    spec = importlib.util.spec_from_file_location("make_convert_fixtures",
                                                  os.path.join(HERE, "..", "make_convert_fixtures.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


maker = _load_maker()


def load_json(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return json.load(f)


def file_sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()




@pytest.fixture(scope="session")
def f32_files(tmp_path_factory):
    """kvant's F32 conversion of every fixture, made once per session (import this fixture into a test module)."""
    from kvant.convert.pipeline import convert
    out = tmp_path_factory.mktemp("f32")
    paths = {}
    for name in MODELS:
        paths[name] = str(out / f"{name}-F32.gguf")
        convert(os.path.join(HF, name), paths[name], "F32", progress=False)
    return paths
