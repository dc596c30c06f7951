"""The first run compiles the numba kernels (later runs load them from numba's on-disk cache): say so once."""
import sys

import numba

from kvant.runtime.model_cache import cache_dir

VERSION = "1"


def _marker():
    return cache_dir() / f"compiled-{VERSION}-numba{numba.__version__}"


def announce():
    """Say once per machine (and numba version) that kernels are being compiled."""
    if not _marker().exists():
        print("kvant: compiling kernels for this machine (first run only; later runs reuse numba's cache) ...",
              file=sys.stderr, flush=True)


def done():
    marker = _marker()
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
