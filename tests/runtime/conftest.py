"""Shared fixtures of the runtime tests."""
import pytest

from tiny_model import write_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random llama-architecture model (tests/tiny_model.py), written once per test module."""
    return str(write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf"))
