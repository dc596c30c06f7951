"""kvant.runtime: run GGUF models on the CPU. See kvant.runtime.api for the API:

    from kvant.runtime import Model
    model = Model("smollm2")
"""
import kvant.formats  # noqa: F401,E402  (the kernel path and numba's cache folder, before any kernel)

__all__ = ["Model", "load", "load_tokenizer", "Stats", "PerplexityResult", "ContextFullError"]


def __getattr__(name):
    # imported on first use, so that `import kvant.runtime.kernels` does not load the whole API
    if name in __all__:
        from kvant.runtime import api
        return getattr(api, name)
    raise AttributeError(f"module 'kvant.runtime' has no attribute {name!r}")
