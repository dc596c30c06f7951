"""The first run compiles the numba kernels (later runs load them from numba's on-disk cache): say so once."""
import hashlib
import os
import sys

import numba

from kvant.runtime.model_cache import cache_dir

VERSION = "1"


def _marker():
    # numba caches beside the installed modules: one marker per installation and numba version
    here = hashlib.sha1(os.path.dirname(os.path.abspath(__file__)).encode()).hexdigest()[:12]
    return cache_dir() / f"compiled-{VERSION}-numba{numba.__version__}-{here}"


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
