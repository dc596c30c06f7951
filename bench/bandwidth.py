"""The machine's read bandwidth: a streaming sum over a 1 GiB float32 array, the ceiling for a decode that reads every
weight once per token (bench/speed.py reports generation GB/s as a share of it).

numba, parallel over 64 chunks, each chunk summed as rows of 16 floats into 16 partial sums (the lanes are
independent, so LLVM vectorizes without reassociating; one scalar accumulator ran at a third of the speed here);
numpy's sum (one thread) as a cross-check. Best of --passes.
    python bench/bandwidth.py [--threads 2] [--gib 1] [--passes 5] [--json]
"""
import argparse
import json
import time

import numba
import numpy as np

LANES = 16
CHUNKS = 64


@numba.njit(parallel=True, cache=True)
def stream_sum(partial, a):
    """partial[c, :] = the column sums of a[c] (a: chunks x rows x 16, float32)."""
    for c in numba.prange(a.shape[0]):
        acc = np.zeros(LANES, np.float32)
        for i in range(a.shape[1]):
            for j in range(LANES):
                acc[j] += a[c, i, j]
        partial[c] = acc


def best_seconds(fn, passes):
    """The fastest of `passes` timed calls of fn, after one untimed call (compile, first touch)."""
    fn()                                    # compile / first touch
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(threads=2, gib=1.0, passes=5):
    """Read bandwidth in GB/s (1e9 bytes/s): numba with `threads` and with 1 thread, numpy's sum (1 thread)."""
    n = int(gib * (1 << 30)) // (4 * LANES * CHUNKS) * LANES * CHUNKS
    a = np.ones(n, np.float32).reshape(CHUNKS, -1, LANES)      # np.ones writes every page: nothing faults later
    partial = np.zeros((CHUNKS, LANES), np.float32)
    out = {"bytes": a.nbytes, "threads": threads}
    for key, t in ((f"numba_{threads}t_gb_s", threads), ("numba_1t_gb_s", 1)):
        numba.set_num_threads(t)
        out[key] = a.nbytes / best_seconds(lambda: stream_sum(partial, a), passes) / 1e9
        if partial.sum(dtype=np.float64) != n:
            raise RuntimeError(f"stream_sum read {partial.sum(dtype=np.float64)} ones, expected {n}")
    out["numpy_sum_gb_s"] = a.nbytes / best_seconds(lambda: a.sum(), passes) / 1e9
    out["gb_s"] = out[f"numba_{threads}t_gb_s"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = measure(args.threads, args.gib, args.passes)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"read {r['bytes'] / (1 << 30):.2f} GiB: numba {args.threads} threads {r['gb_s']:.1f} GB/s, "
              f"1 thread {r['numba_1t_gb_s']:.1f} GB/s; numpy sum (1 thread) {r['numpy_sum_gb_s']:.1f} GB/s")


if __name__ == "__main__":
    main()
