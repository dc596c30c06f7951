"""Files the tests read from ../shared beside the repository (CI puts it there)."""
import os

import pytest

SHARED = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))
CORPORA = os.path.join(SHARED, "corpora")


def corpus(lang):
    """The text of ../shared/corpora/{lang}.txt; the test is skipped, saying so, when it is not there."""
    path = os.path.join(CORPORA, f"{lang}.txt")
    if not os.path.exists(path):
        pytest.skip(f"corpus {path} is not beside the repository (../shared/corpora)")
    with open(path, encoding="utf-8") as f:
        return f.read()
