"""Embeddings as llama.cpp computes them: the final norm's output for every token of an input, pooled.

Pooling follows the file's `{arch}.pooling_type` as llama.cpp reads it (0 none, 1 mean, 2 cls, 3 last; 4, rank, is a
reranker's and is refused), or the caller's choice; a file that names none pools by mean, as llama-embedding does
for a plain language model. normalize: each vector divided by its Euclidean norm (llama-embedding's default).
"""
from __future__ import annotations

import numpy as np

POOLING_TYPES = {0: "none", 1: "mean", 2: "cls", 3: "last"}       # llama.cpp's enum llama_pooling_type
POOLINGS = {
    "none": lambda h: h,                       # one vector per token
    "mean": lambda h: h.mean(axis=0),
    "cls": lambda h: h[0],
    "last": lambda h: h[-1],
}


class EmbeddingError(ValueError):
    """An input or pooling embeddings cannot be made for."""


def file_pooling(metadata: dict) -> str:
    arch = metadata.get("general.architecture")
    value = metadata.get(f"{arch}.pooling_type")
    if value is None:
        return "mean"
    if value not in POOLING_TYPES:
        raise EmbeddingError(f"the file's {arch}.pooling_type is {value!r} (4 is a reranker's); kvant pools by "
                             f"{', '.join(POOLINGS)}")
    return POOLING_TYPES[value]


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise EmbeddingError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    return pooling


def pool(hidden: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """hidden (tokens, d) float32 -> (d,) (or (tokens, d) for "none"), L2-normalised if asked."""
    v = POOLINGS[pooling](hidden.astype(np.float64))
    if normalize:
        norm = np.linalg.norm(v, axis=-1, keepdims=True)
        v = v / np.where(norm > 0, norm, 1.0)
    return v.astype(np.float32)
