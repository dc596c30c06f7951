"""Where one decode step's matrix time goes, per weight type: every weight matrix of a model (kvant's repacked
QMatrix, as the model loaded it) timed alone on a random vector, the best of --reps calls each, summed by type.

    python bench/decode_profile.py MODEL.gguf [--reps 20]

Prints per type: milliseconds per token, weights, G weights/s and GB/s of the repacked bytes, and the tokens/s the
matrices alone would allow (attention, norms and sampling not counted). A quick way to see which type's kernel to
work on before a bench/speed.py run; on a shared machine compare figures from one run only.
"""
import argparse
import collections
import time

import numpy as np

from kvant.runtime import Model
from kvant.runtime.kernels.registry import QMatrix


def matrices(transformer):
    """Every distinct QMatrix of the layers, then the output head."""
    found, seen = [], set()
    for layer in transformer.layers:
        for value in vars(layer).values():
            for q in (value if isinstance(value, (list, tuple)) else [value]):
                if isinstance(q, QMatrix) and id(q) not in seen:
                    seen.add(id(q))
                    found.append(q)
    if id(transformer.output) not in seen:
        found.append(transformer.output)
    return found


def best_call(q, reps):
    x = np.random.default_rng(0).standard_normal(q.shape[1]).astype(np.float32)
    out = np.empty(q.shape[0], np.float32)
    q.matvec(out, x)            # compiled or loaded from the cache before timing
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        q.matvec(out, x)
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    per_type = collections.defaultdict(lambda: [0.0, 0, 0])     # type -> seconds, weights, bytes
    for q in matrices(Model(args.model).transformer):
        entry = per_type[q.type_name]
        entry[0] += best_call(q, args.reps)
        entry[1] += q.shape[0] * q.shape[1]
        entry[2] += q.nbytes
    total = sum(t for t, _, _ in per_type.values())
    for name, (t, n, nbytes) in sorted(per_type.items(), key=lambda kv: -kv[1][0]):
        print(f"{name:8s} {t * 1e3:8.2f} ms  {n / 1e6:8.1f} M weights  {n / t / 1e9:6.2f} G weights/s  "
              f"{nbytes / t / 1e9:6.2f} GB/s")
    print(f"all      {total * 1e3:8.2f} ms: {1 / total:.1f} tokens/s from the matrices alone")


if __name__ == "__main__":
    main()
