import kvant.formats  # noqa: F401  (the kernel path and numba's cache folder, before any kernel)
