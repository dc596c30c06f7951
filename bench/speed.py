"""Speed side by side, in one run, on the same files and threads: kvant (`qrun bench`), llama.cpp's own llama-bench
(when built: python bench/build_llama_bench.py) and llama-cpp-python (llama.cpp through its Python binding).

    python bench/speed.py [--threads 2] [--reps 3] [--types Q4_0,Q8_0,Q4_K_M] [--no-gemma]

Each side runs in a fresh process per file, the sides interleaved, best of --reps. Columns: prompt processing
(pp) and generation (tg) tokens/s, the GB/s generation implies (bytes of weights read per token x tokens/s),
load time (kvant: open + tokenizer + weight views/repack, kernels already compiled) and resident memory after the
run. Writes the SPEED section of bench/RESULTS.md.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import models  # noqa: E402
from results import update_section  # noqa: E402

LLAMA_BENCH = os.path.join(HERE, ".work", "llama.cpp-build", "bin", "llama-bench")

_PY_PEER = r"""
import json, sys, time, numpy as np, llama_cpp
path, n_prompt, n_gen, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
llm = llama_cpp.Llama(model_path=path, n_ctx=n_prompt + n_gen + 8, n_batch=512, n_threads=threads,
                      n_threads_batch=threads, verbose=False)
load = time.perf_counter() - t0
rng = np.random.default_rng(0)
prompt = rng.integers(0, llm.n_vocab(), n_prompt).tolist()
llm.reset(); t0 = time.perf_counter(); llm.eval(prompt); pp = n_prompt / (time.perf_counter() - t0)
llm.reset(); llm.eval(prompt[:1]); t0 = time.perf_counter()
for i in range(n_gen):
    llm.eval([int(rng.integers(0, llm.n_vocab()))])
tg = n_gen / (time.perf_counter() - t0)
rss = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]
print(json.dumps({"pp_tok_s": pp, "tg_tok_s": tg, "load_s": load, "rss_mb": rss}))
"""


def run_json(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def kvant(path, n_prompt, n_gen, threads):
    return run_json([sys.executable, "-m", "kvant.runtime.cli", "bench", path, "-p", str(n_prompt), "-n", str(n_gen),
                     "-t", str(threads), "--json"])


def llama_cpp_python(path, n_prompt, n_gen, threads):
    return run_json([sys.executable, "-c", _PY_PEER, path, str(n_prompt), str(n_gen), str(threads)])


def llama_bench(path, n_prompt, n_gen, threads):
    if not os.path.exists(LLAMA_BENCH):
        return {"error": "not built"}
    r = subprocess.run([LLAMA_BENCH, "-m", path, "-p", str(n_prompt), "-n", str(n_gen), "-t", str(threads),
                        "-r", "1", "-o", "json"], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    rows = json.loads(r.stdout)
    out = {}
    for row in rows:
        key = "pp_tok_s" if row["n_prompt"] > 0 else "tg_tok_s"
        out[key] = row["avg_ts"]
    return out


SIDES = {"kvant": kvant, "llama-bench": llama_bench, "llama-cpp-python": llama_cpp_python}


def best(runs):
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    return {k: (max(r[k] for r in ok) if k.endswith("tok_s") else min(r[k] for r in ok))
            for k in ok[0] if isinstance(ok[0][k], (int, float))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("--types", default="Q4_0,Q8_0,Q4_K_M,Q6_K,IQ4_XS,TQ2_0,F16")
    ap.add_argument("--no-gemma", action="store_true")
    ap.add_argument("--tinyllama", default="Q4_K_M,Q8_0", help="types of the random 1.1B llama ('' = none)")
    args = ap.parse_args()
    files = [(f"SmolLM2 {t}", models.smollm2(t)) for t in args.types.split(",") if t]
    if not args.no_gemma:
        files.append(("gemma-3-270m Q4_K_M", models.gemma3()))
    from make_tinyllama import tinyllama
    files += [(f"random 1.1B llama {t}", tinyllama(t)) for t in args.tinyllama.split(",") if t]
    lines = ["| model | side | pp tok/s | tg tok/s | tg GB/s | load s | RSS MB | kvant/llama-bench pp, tg |",
             "|---|---|---|---|---|---|---|---|"]
    for label, path in files:
        runs = {side: [] for side in SIDES}
        for _ in range(args.reps):
            for side, fn in SIDES.items():
                runs[side].append(fn(path, args.n_prompt, args.n_gen, args.threads))
        results = {side: best(r) for side, r in runs.items()}
        weight_gb = results["kvant"].get("weight_bytes", 0) / 1e9
        ref = results["llama-bench"] if "tg_tok_s" in results["llama-bench"] else results["llama-cpp-python"]
        for side, r in results.items():
            if "error" in r:
                lines.append(f"| {label} | {side} | {r['error']} | | | | | |")
                continue
            ratio = ""
            if side == "kvant" and "tg_tok_s" in ref:
                ratio = f"{r['pp_tok_s'] / ref['pp_tok_s']:.2f}x, {r['tg_tok_s'] / ref['tg_tok_s']:.2f}x"
            lines.append(f"| {label} | {side} | {r['pp_tok_s']:.1f} | {r['tg_tok_s']:.1f} | "
                         f"{r['tg_tok_s'] * weight_gb:.1f} | {_fmt(r.get('load_s'), 2)} | {_fmt(r.get('rss_mb'), 0)} | "
                         f"{ratio} |")
        print("\n".join(lines[-3:]), flush=True)
    command = (f"python bench/speed.py --threads {args.threads} --reps {args.reps} -p {args.n_prompt} "
               f"-n {args.n_gen} --types {args.types} --tinyllama '{args.tinyllama}'"
               + (" --no-gemma" if args.no_gemma else ""))
    update_section("SPEED", f"pp{args.n_prompt} / tg{args.n_gen}, {args.threads} threads, best of {args.reps} "
                            f"interleaved runs. GB/s = kvant's bytes of weights read per token x tokens/s. The ratio "
                            f"column compares with llama-bench (or llama-cpp-python where llama-bench is not built).\n"
                            f"Command: `{command}`\n\n" + "\n".join(lines) + "\n")


def _fmt(v, digits):
    return "" if v is None else f"{v:.{digits}f}"


if __name__ == "__main__":
    main()
