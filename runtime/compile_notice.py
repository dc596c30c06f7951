"""The first run compiles the numba kernels (later runs load them from numba's on-disk cache): say so once."""
import sys
from contextlib import contextmanager

import numba

from kvant.runtime.model_cache import cache_dir

VERSION = "1"


def _marker():
    return cache_dir() / f"compiled-{VERSION}-numba{numba.__version__}"


@contextmanager
def announce():
    marker = _marker()
    first = not marker.exists()
    if first:
        print("kvant: compiling kernels for this machine (first run only; later runs reuse numba's cache) ...",
              file=sys.stderr, flush=True)
    yield
    if first:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
