"""One weight type's matvec on the 1.1B llama's shapes, from memory and in cache, 2 threads (kernel-level A/B).

The decode step of a large model reads every matrix once per token, in layer order; a single matrix timed again and
again sits in the cache and says what the kernel computes, not what the memory gives it. This runs both: the 7
matrices of each of LAYERS layers (q, k, v, o, gate, up, down of d_model 2048, ffn 5632, 4 KV heads; random blocks,
a distinct copy per layer) called in order, best of 15 passes; and one 5632 x 2048 matrix, best of 300 calls.
Prints the GB/s of each (kvant's repacked bytes). To compare two versions of a kernel, run it once per checkout,
interleaved (PYTHONPATH pointing at a directory whose kvant/ links another checkout's formats, convert and runtime).

    python bench/matvec_memory.py [--type Q4_K] [--layers 22] [--threads 2]
"""
import argparse
import os
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kernels import random_raw  # noqa: E402

SHAPES = ((2048, 2048), (256, 2048), (256, 2048), (2048, 2048), (5632, 2048), (5632, 2048), (2048, 5632))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--type", default="Q4_K")
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from kvant.runtime.kernels import prepare
    rng = np.random.default_rng(0)
    base = {s: random_raw(args.type, *s, rng) for s in set(SHAPES)}
    mats = []
    for layer in range(args.layers):
        for s in SHAPES:
            raw = base[s].copy()
            raw[:, 0] ^= layer % 256    # a distinct copy: no two matrices share cache lines
            mats.append(prepare(raw, args.type))
    nbytes = sum(m.nbytes for m in mats)
    xs = {c: rng.standard_normal(c, dtype=np.float32) for c in (2048, 5632)}
    outs = {r: np.empty(r, np.float32) for r in (256, 2048, 5632)}
    numba.set_num_threads(args.threads)

    def best(calls, fn):
        fn()
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    memory = best(15, lambda: [m.matvec(outs[m.shape[0]], xs[m.shape[1]]) for m in mats])
    big = next(m for m in mats if m.shape == (5632, 2048))
    cache = best(300, lambda: big.matvec(outs[5632], xs[2048]))
    print(f"{args.type}: {nbytes / 1e6:.0f} MB, from memory {memory * 1e3:.2f} ms {nbytes / memory / 1e9:.1f} GB/s; "
          f"in cache 5632x2048 {cache * 1e6:.0f} us {big.nbytes / cache / 1e9:.1f} GB/s")


if __name__ == "__main__":
    main()
