"""Where one decode step's matrix time goes, per weight type: every weight matrix of a model (kvant's repacked
QMatrix, as the model loaded it) timed alone on a random vector, the best of --reps calls each, summed by type.
With --tokens N, the same for a prefill of N tokens (QMatrix.matmul: the GEMM kernels; the output head, which a
prompt runs for its last token only, is timed on one token).

    python bench/decode_profile.py MODEL.gguf [--reps 20] [--tokens 128]

Prints per type: milliseconds per call, weights (times tokens), G weights/s and GB/s of the repacked bytes, and the
tokens/s the matrices alone would allow (attention, norms and sampling not counted). A quick way to see which type's
kernel to work on before a bench/speed.py run; on a shared machine compare figures from one run only.
"""
import argparse
import collections

import numpy as np

from bandwidth import best_seconds
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


def best_call(q, reps, tokens):
    x = np.random.default_rng(0).standard_normal((tokens, q.shape[1])).astype(np.float32)
    out = np.empty((tokens, q.shape[0]), np.float32)
    call = (lambda: q.matvec(out[0], x[0])) if tokens == 1 else (lambda: q.matmul(out, x))
    return best_seconds(call, reps)         # the first call compiles or loads the kernel from the cache


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=1, help="tokens per call: 1 = decode (matvec), more = prefill")
    args = ap.parse_args()
    per_type = collections.defaultdict(lambda: [0.0, 0, 0])     # type -> seconds, weights x tokens, bytes
    transformer = Model(args.model).transformer
    for q in matrices(transformer):
        tokens = 1 if q is transformer.output else args.tokens
        entry = per_type[q.type_name]
        entry[0] += best_call(q, args.reps, tokens)
        entry[1] += q.shape[0] * q.shape[1] * tokens
        entry[2] += q.nbytes
    total = sum(t for t, _, _ in per_type.values())
    for name, (t, n, nbytes) in sorted(per_type.items(), key=lambda kv: -kv[1][0]):
        print(f"{name:8s} {t * 1e3:8.2f} ms  {n / 1e6:8.1f} M weights  {n / t / 1e9:6.2f} G weights/s  "
              f"{nbytes / t / 1e9:6.2f} GB/s")
    print(f"all      {total * 1e3:8.2f} ms: {args.tokens / total:.1f} tokens/s from the matrices alone")


if __name__ == "__main__":
    main()
