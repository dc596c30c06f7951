"""A real model's logits for a fixed text, prefilled (the GEMMs) and then decoded a token at a time (the matvecs),
on the kernel path of the process: tests/runtime/test_paths.py compares the paths' logits.
    KVANT_CPU_PATH=avx2 python tests/path_logits.py MODEL.gguf OUT.npy
"""
import sys

import numpy as np

TEXT = ("The quick brown fox jumps over the lazy dog. Быстрая коричневая лиса прыгает через ленивую собаку, and "
        "then it runs away into the deep green forest where nobody can find it again.")
PREFILL, DECODE = 32, 8


def logits(path):
    from kvant.runtime import Model
    with Model(path, n_threads=2, n_ctx=64) as m:
        tokens = m.tokenize(TEXT)[:PREFILL + DECODE]
        assert len(tokens) == PREFILL + DECODE, len(tokens)
        rows = [m.transformer.forward(tokens[:PREFILL], 0, m.cache, logits_from=0)]
        rows += [m.transformer.forward([t], PREFILL + i, m.cache) for i, t in enumerate(tokens[PREFILL:])]
    return np.concatenate(rows)


if __name__ == "__main__":
    np.save(sys.argv[2], logits(sys.argv[1]))
