"""kvant.formats: the GGUF container and the ggml number formats. Importing it first fixes the kernel path and where
numba caches compiled code (host.py), before any numba kernel of kvant's is defined."""
from . import host  # noqa: F401
