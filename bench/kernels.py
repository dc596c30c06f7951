"""Kernel benchmark: per ggml type, matvec G elem/s and GB/s (1 and 2 threads) on 4096x4096 and the SmolLM2 /
gemma-3 shapes, prefill matmul (n=128) in G multiply-adds/s, and repack time. With --models, the whole-model repack
time of the GGUF files in /work/models (or given paths) on 2 threads.

    python bench/kernels.py                 # all types, all shapes
    python bench/kernels.py -t Q4_0 Q8_0    # some types
    python bench/kernels.py --models        # + real files

The machine is shared and noisy: each figure is a low quantile of single-call times; compare within one run.
"""
import argparse
import os
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
    "IQ2_XXS": (0,), "IQ2_XS": (0,), "IQ2_S": (0,), "IQ3_XXS": (0,), "IQ3_S": (0,), "IQ1_S": (0,),
    "IQ1_M": (),        # its d is spread over the scales' top nibbles: random bytes (the time does not depend on it)
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


def best_time(fn, min_time=0.15, q=0.2):
    """Seconds per call: the q-quantile of single-call times over about min_time of calls. The machine is shared;
    a low quantile drops the calls that waited for a descheduled worker thread (milliseconds each)."""
    fn()
    times = []
    end = time.perf_counter() + min_time
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if t1 > end and len(times) >= 3:
            break
    return float(np.quantile(times, q))


RETRIES, RETRY_WAIT = 5, 2.0
SMOL_TOKEN = {(576, 576): 2, (192, 576): 2, (1536, 576): 2, (576, 1536): 1}   # per layer; x30 + the 49152 head
GEMMA_TOKEN = {(1024, 640): 2, (256, 640): 2, (2048, 640): 2, (640, 2048): 1}  # per layer; x18 + the 262144 head


def token_ms(times, per_layer, n_layers, head):
    """Matvec time of one decoded token (ms) from per-shape times (s), if every shape was measured."""
    if head not in times or any(s not in times for s in per_layer):
        return None
    return (n_layers * sum(times[s] * k for s, k in per_layer.items()) + times[head]) * 1e3


def bench_type(name, shapes, threads, n_tok, rng):
    """Print the per-shape table for one type; return a summary dict."""
    print(f"\n== {name}")
    print(f"{'shape':>14} {'repack ms':>9} " + " ".join(f"{f'{t}thr Gel/s':>11} {'GB/s':>5} {'us':>7}" for t in threads)
          + f" {f'mm{n_tok} GMAC/s':>13}")
    summary = {"type": name, "times": {t: {} for t in threads}, "mm": {}}
    for rows, cols in shapes:
        raw = random_raw(name, rows, cols, rng)
        numba.set_num_threads(max(threads))
        prepare(raw[:4], name)                          # numba's first call of a cached kernel: not repack time
        t0 = time.perf_counter()
        qm = prepare(raw, name)
        rp = time.perf_counter() - t0
        if (rows, cols) == (4096, 4096):
            summary["repack"] = rows * cols / rp / 1e6
            summary["ratio"] = qm.nbytes / raw.nbytes
            summary["layout"] = qm.layout.note
        x = rng.standard_normal(cols, dtype=np.float32)
        out = np.empty(rows, np.float32)
        cells = []
        for t in threads:
            numba.set_num_threads(t)
            s = best_time(lambda: qm.matvec(out, x))
            for _ in range(RETRIES):    # more threads but slower: a worker was descheduled by another process
                if t == min(threads) or s < 1.2 * summary["times"][min(threads)][(rows, cols)]:
                    break
                time.sleep(RETRY_WAIT)
                s = min(s, best_time(lambda: qm.matvec(out, x)))
            summary["times"][t][(rows, cols)] = s
            if (rows, cols) == (4096, 4096):
                summary[f"gel{t}"] = rows * cols / s / 1e9
                summary[f"gbs{t}"] = qm.nbytes / s / 1e9
            cells.append(f"{rows * cols / s / 1e9:11.2f} {qm.nbytes / s / 1e9:5.1f} {s * 1e6:7.1f}")
        mm = ""
        if rows * cols <= 20_000_000 and n_tok:
            numba.set_num_threads(max(threads))
            xs = rng.standard_normal((n_tok, cols), dtype=np.float32)
            o2 = np.empty((n_tok, rows), np.float32)
            s = best_time(lambda: qm.matmul(o2, xs), min_time=0.2)
            summary["mm"][(rows, cols)] = rows * cols * n_tok / s / 1e9
            mm = f"{rows * cols * n_tok / s / 1e9:13.1f}"
        print(f"{rows:>6}x{cols:<7} {rp * 1e3:9.1f} " + " ".join(cells) + " " + mm, flush=True)
    for t in threads:
        summary[f"smol{t}"] = token_ms(summary["times"][t], SMOL_TOKEN, 30, (49152, 576))
        summary[f"gemma{t}"] = token_ms(summary["times"][t], GEMMA_TOKEN, 18, (262144, 640))
    return summary


def best_of(a, b):
    """Merge two summaries of one type, keeping the faster figure everywhere."""
    if a is None:
        return b
    out = dict(b)
    for k, v in a.items():
        if k.startswith(("gel", "gbs", "repack")) and v is not None:
            out[k] = max(v, b.get(k) or 0)
        elif k.startswith(("smol", "gemma")) and v is not None:
            out[k] = v if b.get(k) is None else min(v, b[k])
    out["mm"] = {s: max(a["mm"].get(s, 0), b["mm"].get(s, 0)) for s in set(a["mm"]) | set(b["mm"])}
    return out


def markdown(summaries, threads, n_tok):
    t1, t2 = min(threads), max(threads)

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    lines = [
        f"Matvec: 4096x4096, G weights/s and GB/s of repacked bytes, {t1} and {t2} threads. Token: the matvec time of one",
        "decoded token of SmolLM2-135M (30 layers of q,k,v,o,gate,up,down + the 49152x576 head) or gemma-3-270m "
        "(18 layers + the 262144x640 head) if every matrix had this type, as tokens/s. mm: prefill matmul, "
        f"{n_tok} tokens, 1536x576 (256-block types: 4096x4096), {t2} threads, G multiply-adds/s. Repack: 4096x4096, M weights/s ({t2} threads, "
        "including the first-touch page faults of the new arrays). Memory: repacked bytes / file bytes.",
        "",
        f"| type | layout | memory | repack M/s | {t1}t G/s | {t2}t G/s | {t2}t GB/s | SmolLM2 tok/s {t1}t / {t2}t "
        f"| gemma tok/s {t1}t / {t2}t | mm GMAC/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        def tps(key):
            v = s.get(key)
            return None if not v else 1e3 / v
        mm = s["mm"].get((1536, 576)) or s["mm"].get((4096, 4096))
        lines.append(
            f"| {s['type']} | {s.get('layout', '')} | {f(s.get('ratio'), '.2f')}x | {f(s.get('repack'), '.0f')} "
            f"| {f(s.get(f'gel{t1}'), '.1f')} | {f(s.get(f'gel{t2}'), '.1f')} | {f(s.get(f'gbs{t2}'), '.1f')} "
            f"| {f(tps(f'smol{t1}'), '.0f')} / {f(tps(f'smol{t2}'), '.0f')} "
            f"| {f(tps(f'gemma{t1}'), '.0f')} / {f(tps(f'gemma{t2}'), '.0f')} | {f(mm, '.1f')} |")
    return "\n".join(lines) + "\n"


def bench_models(paths, threads):
    """Repack every matrix of each GGUF file twice (the first pass also pages the file in); return markdown lines."""
    from kvant.formats.gguf_file import GGUFFile
    numba.set_num_threads(threads)
    lines = []
    for path in paths:
        with GGUFFile(path) as f:
            names = [n for n, t in f.tensors.items() if len(t.shape) == 2]
            first = names[0]
            prepare(f.raw(first)[:4], f.tensors[first].ggml_type.name)      # numba's cache load, not repack time
            runs = []
            for _ in range(2):
                by_type = {}
                t0 = time.perf_counter()
                qms = []
                for n in names:
                    info = f.tensors[n]
                    t1 = time.perf_counter()
                    qms.append(prepare(f.raw(n), info.ggml_type.name))
                    entry = by_type.setdefault(info.ggml_type.name, [0, 0.0])
                    entry[0] += int(np.prod(info.shape))
                    entry[1] += time.perf_counter() - t1
                runs.append((time.perf_counter() - t0, by_type))
                nbytes = sum(q.nbytes for q in qms)
                del qms
            file_bytes = sum(f.tensors[n].nbytes for n in names)
        total_w = sum(n for n, _ in runs[0][1].values())
        line = (f"{Path(path).name}: {len(names)} matrices, {total_w / 1e6:.0f}M weights, {file_bytes / 1e6:.0f} MB "
                f"-> {nbytes / 1e6:.0f} MB repacked, {threads} threads: first pass {runs[0][0] * 1e3:.0f} ms (pages "
                f"the file in), second {runs[1][0] * 1e3:.0f} ms ("
                + ", ".join(f"{k} {v[0] / 1e6:.0f}M in {v[1] * 1e3:.0f} ms" for k, v in sorted(runs[1][1].items()))
                + ")")
        print(line, flush=True)
        lines.append("- " + line)
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--types", nargs="*", default=list(SUPPORTED_TYPES))
    ap.add_argument("--shapes", choices=["all", "smol", "gemma", "big"], default="all")
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--tokens", type=int, default=128, help="prefill batch for matmul (0: skip)")
    ap.add_argument("--models", nargs="*", default=None,
                    help="also time repacking whole GGUF files (default: the SmolLM2 and gemma files in /work/models)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure everything this many times and keep each figure's best (the machine is shared)")
    ap.add_argument("--write", action="store_true", help="rewrite the kernels section of bench/RESULTS.md")
    args = ap.parse_args(argv)
    shapes = {"all": [(4096, 4096)] + SMOL + GEMMA, "smol": SMOL, "gemma": GEMMA, "big": [(4096, 4096)]}[args.shapes]
    rng = np.random.default_rng(0)
    load0 = os.getloadavg()[0]
    summaries = {}
    for _ in range(args.rounds):
        for name in args.types:
            fit = [(r, c) for r, c in shapes if c % GGML_QUANT_SIZES[GGMLQuantizationType[name]][0] == 0]
            summaries[name] = best_of(summaries.get(name), bench_type(name, fit, args.threads, args.tokens, rng))
    table = markdown(list(summaries.values()), args.threads, args.tokens)
    if args.rounds > 1:
        table += f"\nEach figure is the best of {args.rounds} rounds.\n"
    table += (f"\nLoad average (1 min) at start / end: {load0:.1f} / {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs: 2-thread figures are only meaningful when it stays below about 2.\n")
    print("\n" + table)
    if args.models is not None:
        default = ["/work/models/SmolLM2-135M-Instruct.Q4_1.gguf", "/work/models/gemma-3-270m-Q4_K_M.gguf"]
        lines = bench_models(args.models or [p for p in default if Path(p).exists()], max(args.threads))
        table += "\nWhole-model repack:\n\n" + "\n".join(lines) + "\n"
    if args.write:
        sys.path.insert(0, str(Path(__file__).parent))
        from results import update_section
        notes = (Path(__file__).parent / "KERNELS.md").read_text(encoding="utf-8")
        update_section("kernels", notes + "\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
