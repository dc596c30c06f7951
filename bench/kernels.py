"""Kernel benchmark: per ggml type, matvec G elem/s and GB/s (1 and 2 threads) on 4096x4096 and the SmolLM2 /
gemma-3 shapes, prefill matmul (n=128) in G multiply-adds/s, and repack time. With --models, the whole-model repack
time of the GGUF files in /work/models (or given paths) on 2 threads.

    python bench/kernels.py                 # all types, all shapes
    python bench/kernels.py -t Q4_0 Q8_0    # some types
    python bench/kernels.py --models        # + real files

The machine is shared and noisy: each figure is the best of a few short runs; compare within one run.
"""
import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from kvant.runtime.kernels import SUPPORTED_TYPES, prepare

SMOL = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)]
GEMMA = [(1024, 640), (256, 640), (2048, 640), (640, 2048), (262144, 640)]
FP16_FIELDS = {
    "Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "IQ4_NL": (0,),
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "IQ4_XS": (0,),
    "TQ1_0": (52,), "TQ2_0": (64,),
}


def random_raw(name, rows, cols, rng):
    blk, size = GGML_QUANT_SIZES[GGMLQuantizationType[name]]
    nb = cols // blk
    if name in ("F32", "F16", "BF16"):
        w = rng.standard_normal((rows, cols), dtype=np.float32)
        if name == "F16":
            w = w.astype(np.float16)
        elif name == "BF16":
            w = (w.view(np.uint32) >> 16).astype(np.uint16)
        return w.view(np.uint8).reshape(rows, -1)
    raw = rng.integers(0, 256, (rows, nb, size), dtype=np.uint8)
    for off in FP16_FIELDS[name]:
        raw[:, :, off:off + 2] = np.full((rows, nb), 0.01, np.float16).view(np.uint8).reshape(rows, nb, 2)
    return raw.reshape(rows, -1)


def best_time(fn, min_time=0.05, reps=3):
    fn()
    best = float("inf")
    for _ in range(reps):
        k, t0 = 0, time.perf_counter()
        while True:
            fn()
            k += 1
            el = time.perf_counter() - t0
            if el >= min_time:
                break
        best = min(best, el / k)
    return best


def bench_type(name, shapes, threads, n_tok, rng):
    print(f"\n== {name}")
    print(f"{'shape':>14} {'repack ms':>9} " + " ".join(f"{f'{t}thr Gel/s':>11} {'GB/s':>5} {'us':>7}" for t in threads)
          + f" {f'mm{n_tok} GMAC/s':>13}")
    for rows, cols in shapes:
        raw = random_raw(name, rows, cols, rng)
        t0 = time.perf_counter()
        qm = prepare(raw, name)
        rp = (time.perf_counter() - t0) * 1e3
        x = rng.standard_normal(cols, dtype=np.float32)
        out = np.empty(rows, np.float32)
        cells = []
        for t in threads:
            numba.set_num_threads(t)
            s = best_time(lambda: qm.matvec(out, x))
            cells.append(f"{rows * cols / s / 1e9:11.2f} {qm.nbytes / s / 1e9:5.1f} {s * 1e6:7.1f}")
        mm = ""
        if rows * cols <= 50_000_000 and n_tok:
            numba.set_num_threads(max(threads))
            xs = rng.standard_normal((n_tok, cols), dtype=np.float32)
            o2 = np.empty((n_tok, rows), np.float32)
            s = best_time(lambda: qm.matmul(o2, xs), min_time=0.1, reps=2)
            mm = f"{rows * cols * n_tok / s / 1e9:13.1f}"
        print(f"{rows:>6}x{cols:<7} {rp:9.1f} " + " ".join(cells) + " " + mm, flush=True)


def bench_models(paths, threads):
    from gguf import GGUFReader
    numba.set_num_threads(threads)
    for path in paths:
        t0 = time.perf_counter()
        reader = GGUFReader(path)
        t_open = time.perf_counter() - t0
        tensors = [t for t in reader.tensors if len(t.shape) == 2]
        total_w = sum(int(t.n_elements) for t in tensors)
        by_type = {}
        t0 = time.perf_counter()
        qms = []
        for t in tensors:
            name = t.tensor_type.name
            raw = np.asarray(t.data).view(np.uint8)
            raw = raw.reshape(int(t.shape[1]), -1)
            t1 = time.perf_counter()
            qms.append(prepare(raw, name))
            by_type.setdefault(name, [0, 0.0])
            by_type[name][0] += int(t.n_elements)
            by_type[name][1] += time.perf_counter() - t1
        total = time.perf_counter() - t0
        print(f"\n{Path(path).name}: {len(tensors)} matrices, {total_w / 1e6:.0f}M weights, repacked in "
              f"{total * 1e3:.0f} ms on {threads} threads (GGUFReader open {t_open:.1f} s, not counted); "
              f"file {sum(t.n_bytes for t in tensors) / 1e6:.0f} MB -> {sum(q.nbytes for q in qms) / 1e6:.0f} MB")
        for name, (n, s) in sorted(by_type.items()):
            print(f"   {name:7} {n / 1e6:7.1f}M weights {s * 1e3:7.1f} ms")
        del qms


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--types", nargs="*", default=list(SUPPORTED_TYPES))
    ap.add_argument("--shapes", choices=["all", "smol", "gemma", "big"], default="all")
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--tokens", type=int, default=128, help="prefill batch for matmul (0: skip)")
    ap.add_argument("--models", nargs="*", default=None,
                    help="also time repacking whole GGUF files (default: /work/models/*.gguf)")
    args = ap.parse_args(argv)
    shapes = {"all": [(4096, 4096)] + SMOL + GEMMA, "smol": SMOL, "gemma": GEMMA, "big": [(4096, 4096)]}[args.shapes]
    rng = np.random.default_rng(0)
    for name in args.types:
        fit = [(r, c) for r, c in shapes if c % GGML_QUANT_SIZES[GGMLQuantizationType[name]][0] == 0]
        bench_type(name, fit, args.threads, args.tokens, rng)
    if args.models is not None:
        bench_models(args.models or sorted(str(p) for p in Path("/work/models").glob("*.gguf")), max(args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
