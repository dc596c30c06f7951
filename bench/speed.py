r"""Speed side by side, in one run, on the same files and threads: kvant (`qrun bench`), llama.cpp's own llama-bench
(when built: python bench/build_llama_bench.py) and llama-cpp-python (llama.cpp through its Python binding).

    # the full table (every model and type of issue 5; about an hour on 2 cores)
    python bench/speed.py --threads 2 --reps 3 -p 128,512 -n 64 --types Q4_0,Q8_0,Q4_K_M,Q6_K,IQ4_XS,TQ2_0,F16 \
        --tinyllama Q4_K_M,Q8_0
    # a quick check of one file, RESULTS.md left alone
    python bench/speed.py --types Q4_K_M --no-gemma --tinyllama '' --reps 1 --no-write

Every measurement runs in a fresh process; per file, the processes run interleaved (kvant bench, qrun generate, the
Python API, the read bandwidth, llama-bench, llama-cpp-python, the start-up runs; then again), each figure the best
of --reps. The machine's bandwidth swings over minutes (26-57 GB/s here), so ratios of kvant to itself or to the
bandwidth are taken within a round and the median over the rounds is reported.
- Speed: prompt processing (pp, one figure per -p length) and generation (tg) tokens/s, the GB/s generation implies
  (each side's own bytes read per token x tokens/s) and its share of the machine's read bandwidth (bench/bandwidth.py,
  run in every round after kvant's bench and the user runs), load time and resident memory after the run.
- Start-up: time from process start to the first generated token of a --ttft-prompt-token prompt; kvant cold (numba's
  cache empty: every kvant process of a file gets NUMBA_CACHE_DIR = a fresh temporary directory, which numba
  prefers over the in-tree __pycache__ for every cache=True function, installed or editable; the cold run fills it,
  so all later kvant runs of that file are warm) and warm, llama-cpp-python (load + first token).
- What users run: `qrun generate -n --user-tokens --seed 1 --stats` and the Python API's Model.generate (streamed,
  detokenized, written to stdout), both with the default sampler (llama.cpp's: top-k 40 over the whole vocabulary
  every token), against `qrun bench`'s tg of the same round.
Writes the SPEED section of bench/RESULTS.md.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import models  # noqa: E402
from results import path_line, path_section, publish  # noqa: E402

LLAMA_BENCH = os.path.join(HERE, ".work", "llama.cpp-build", "bin", "llama-bench")
LLAMA_BENCH_AVX2 = os.path.join(HERE, ".work", "llama.cpp-build-avx2", "bin", "llama-bench")
BUILDS = {LLAMA_BENCH: "built by bench/build_llama_bench.py (GGML_NATIVE=ON)",
          LLAMA_BENCH_AVX2: "built for AVX2 only by bench/build_llama_bench.py --avx2 (GGML_NATIVE=OFF; AVX2, FMA, "
                            "F16C, BMI2; no AVX-512, no AVX-VNNI)"}
TIMEOUT_S = 3600
USER_SEED = 1        # sampled generation, repeatable

# the prompt of the start-up and user runs: an English text long enough for 128 tokens in every tokenizer here
TEXT = (
    "Once upon a time, in a small village at the edge of a great forest, there lived an old clockmaker who had "
    "never left the valley. Every morning he opened the shutters of his workshop, wound the tall clock by the door "
    "and listened to its ticking as if it were telling him the news of the day. Travellers who passed through the "
    "village on their way to the mountains often stopped to watch him work, because his hands moved with a "
    "patience that seemed to belong to another century. One autumn evening a young woman arrived with a broken "
    "pocket watch wrapped in a handkerchief. She said it had belonged to her grandmother, that no one in the city "
    "could repair it, and that she had walked for three days to find him. The clockmaker turned the watch over in "
    "his palm, opened the back with a thin blade, and looked for a long time at the tiny wheels inside. "
) * 2

# --- child processes: each prints one JSON line last -------------------------------------------------------------
_PY_PEER = r"""
import json, sys, time, numpy as np, llama_cpp
path, n_gen, threads = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
prompts = [int(n) for n in sys.argv[2].split(",")]
t0 = time.perf_counter()
llm = llama_cpp.Llama(model_path=path, n_ctx=max(prompts) + n_gen + 8, n_batch=512, n_threads=threads,
                      n_threads_batch=threads, verbose=False)
out = {"load_s": time.perf_counter() - t0}
rng = np.random.default_rng(0)
def prompt_s(n):
    llm.reset(); t0 = time.perf_counter(); llm.eval(rng.integers(0, llm.n_vocab(), n).tolist())
    return time.perf_counter() - t0
for n in prompts:
    prompt_s(n)                                              # warm-up, as llama-bench
    out[f"pp{n}_tok_s"] = n / prompt_s(n)
def gen_s(n):
    llm.reset(); llm.eval([int(rng.integers(0, llm.n_vocab()))]); t0 = time.perf_counter()
    for i in range(n):
        llm.eval([int(rng.integers(0, llm.n_vocab()))])
    return time.perf_counter() - t0
gen_s(1)
out["tg_tok_s"] = n_gen / gen_s(n_gen)
out["rss_mb"] = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]
print(json.dumps(out))
"""

# time.time() at each step; the parent subtracts its own time.time() taken just before starting the process
_KVANT_TTFT = r"""
import json, sys, time
t = {"started": time.time()}
path, n_prompt, threads, n_ctx, text = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
from kvant.runtime import Model
from kvant.runtime.sampling import Sampler, SamplerSettings
t["imported"] = time.time()
m = Model(path, n_ctx=n_ctx, n_threads=threads)
t["loaded"] = time.time()
ids = m.tokenize(text)[:n_prompt]
assert len(ids) == n_prompt, len(ids)
# 3 more tokens after the first one, so a cold run also compiles (and caches) the decode path, with the default
# sampler a user gets (its top-k kernel compiled and cached too)
for i, token in enumerate(m.generate_tokens(ids, 4, Sampler(SamplerSettings(seed=1)))):
    if i == 0:
        t["first_token"] = time.time()
print(json.dumps(t))
"""

_LLAMA_TTFT = r"""
import json, sys, time
t = {"started": time.time()}
path, n_prompt, threads, n_ctx, text = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
import llama_cpp
t["imported"] = time.time()
llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                      verbose=False)
t["loaded"] = time.time()
ids = llm.tokenize(text.encode(), add_bos=True)[:n_prompt]
assert len(ids) == n_prompt, len(ids)
next(llm.generate(ids, top_k=1, temp=0.0))
t["first_token"] = time.time()
print(json.dumps(t))
"""

# the Python API as a user's script runs it: the first call of a fresh process, then a second call (same prompt: the
# prompt comes from the cache, the same tokens are generated again)
_KVANT_API = r"""
import json, sys, time
path, n_gen, threads, text = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
SEED = int(sys.argv[5])
from kvant.runtime import Model
m = Model(path, n_threads=threads)
out = {}
for call in ("first", "second"):
    t0 = time.perf_counter()
    for piece in m.generate(text, n_gen, seed=SEED, stream=True):   # llama.cpp's default sampling
        sys.stdout.write(piece)
        sys.stdout.flush()
    seconds = time.perf_counter() - t0 - m.stats.prefill_seconds
    sys.stdout.write("\n")
    out[f"{call}_tok_s"] = m.stats.generated_tokens / seconds
    out["generated"] = m.stats.generated_tokens
print(json.dumps(out))
"""


def _error(r):
    return {"error": (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1][:120]}


def run_json(cmd, env=None):
    """The JSON object on the last line of a command's stdout, or {"error": its last line of stderr}."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_S} s"}
    if r.returncode != 0:
        return _error(r)
    return json.loads(r.stdout.strip().splitlines()[-1])


# --- the runs of one file; each takes (path, args, env) and returns a flat dict -----------------------------------
def kvant_bench(path, args, env):
    r = run_json([sys.executable, "-m", "kvant.runtime.cli", "bench", path, "-p", args.n_prompt, "-n", str(args.n_gen),
                  "-t", str(args.threads), "--json"], env)
    if "error" in r:
        return r
    out = {f"pp{n}_tok_s": v for n, v in r["pp_tok_s"].items()}
    out.update({k: r[k] for k in ("tg_tok_s", "weight_bytes", "load_s", "rss_mb")})
    return out


def llama_bench(path, args, env):
    if not os.path.exists(args.llama_bench):
        how = "python bench/build_llama_bench.py" + (" --avx2" if args.llama_bench == LLAMA_BENCH_AVX2 else "")
        return {"error": f"{args.llama_bench} not built ({how})"}
    try:
        r = subprocess.run([args.llama_bench, "-m", path, "-p", args.n_prompt, "-n", str(args.n_gen),
                            "-t", str(args.threads), "-r", "1", "-o", "json"],
                           capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_S} s"}
    if r.returncode != 0:
        return _error(r)
    return {(f"pp{row['n_prompt']}_tok_s" if row["n_prompt"] > 0 else "tg_tok_s"): row["avg_ts"]
            for row in json.loads(r.stdout)}


def llama_cpp_python(path, args, env):
    return run_json([sys.executable, "-c", _PY_PEER, path, args.n_prompt, str(args.n_gen), str(args.threads)], env)


def _ttft(script, path, args, env, n_ctx):
    t0 = time.time()
    r = run_json([sys.executable, "-c", script, path, str(args.ttft_prompt), str(args.threads), str(n_ctx), TEXT],
                 env)
    if "error" in r:
        return r
    return {"ttft_s": r["first_token"] - t0, "start_s": r["started"] - t0, "import_s": r["imported"] - r["started"],
            "load_s": r["loaded"] - r["imported"], "prompt_s": r["first_token"] - r["loaded"]}


def kvant_ttft(path, args, env, n_ctx):
    return _ttft(_KVANT_TTFT, path, args, env, n_ctx)


def llama_ttft(path, args, env, n_ctx):
    return _ttft(_LLAMA_TTFT, path, args, env, n_ctx)


def qrun_generate(path, args, env):
    try:
        r = subprocess.run([sys.executable, "-m", "kvant.runtime.cli", "generate", path,
                            "-p", TEXT[:args.user_prompt_chars], "-n", str(args.user_tokens), "--seed", str(USER_SEED),
                            "-t", str(args.threads), "--stats"],
                           capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {TIMEOUT_S} s"}
    stats = [line for line in r.stderr.splitlines() if line.startswith("[prompt")]
    if r.returncode != 0 or not stats:
        return _error(r)
    # "[prompt 19 tokens: 0 reused, 19 prefilled; 128 generated, 120.5 tok/s; prefill 0.041 s, generation 1.062 s]"
    m = re.search(r"(\d+) generated, .* generation ([\d.]+) s\]", stats[-1])
    generated, seconds = int(m[1]), float(m[2])
    return {"tok_s": generated / seconds, "generated": generated}


def kvant_api(path, args, env):
    return run_json([sys.executable, "-c", _KVANT_API, path, str(args.user_tokens), str(args.threads),
                     TEXT[:args.user_prompt_chars], str(USER_SEED)], env)


def bandwidth(path, args, env):
    """The machine's read bandwidth now (bench/bandwidth.py): it swings between about 26 and 57 GB/s over minutes
    here (other tenants of the host), so it is measured in every round, beside the runs it is the reference for."""
    return run_json([sys.executable, os.path.join(HERE, "bandwidth.py"), "--threads", str(args.threads), "--json"])


# interleaved in this order, --reps times per file. The machine's speed swings over minutes, so what is compared
# within a round sits close together: kvant's bench, the user runs measured against it, the bandwidth, llama.cpp.
RUNS = {
    "kvant": kvant_bench,
    "qrun generate": qrun_generate,
    "API generate": kvant_api,
    "read bandwidth": bandwidth,
    "llama-bench": llama_bench,
    "llama-cpp-python": llama_cpp_python,
    "kvant warm start": kvant_ttft,
    "llama-cpp-python start": llama_ttft,
}
SIDES = ("kvant", "llama-bench", "llama-cpp-python")          # the rows of the speed table
STARTS = ("kvant warm start", "llama-cpp-python start")       # taken as whole runs (the fastest), not key by key


def best(runs, whole_by=None):
    """The best of repeated runs: tokens/s the highest, everything else the lowest, key by key; or, with whole_by,
    the one run whose whole_by is lowest. The first error if every run failed."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    if whole_by:
        return min(ok, key=lambda r: r[whole_by])
    return {k: (max if k.endswith("tok_s") else min)(r[k] for r in ok) for k in ok[0]}


def file_bytes_per_token(path):
    """Bytes of the GGUF's tensor data llama.cpp reads per generated token: every tensor, except the token
    embedding (one row of it is read per token) unless it is also the output head (no output.weight)."""
    from kvant.formats.gguf_file import open_gguf
    with open_gguf(path) as f:
        total = sum(info.nbytes for info in f.tensors.values())
        if "output.weight" in f.tensors:
            total -= f.tensors["token_embd.weight"].nbytes
        return total


def context_length(path):
    """kvant's default context (min of 4096 and the trained context); llama-cpp-python's start-up gets the same."""
    from kvant.formats.gguf_file import open_gguf
    from kvant.runtime.api import DEFAULT_N_CTX
    from kvant.runtime.config import Config
    with open_gguf(path) as f:
        return min(DEFAULT_N_CTX, Config.from_metadata(f.metadata).n_ctx_train)


def measure_file(path, args):
    """Every run of one file: the cold start first (it fills this file's fresh numba cache), then --reps rounds of
    RUNS interleaved."""
    n_ctx = context_length(path)
    cache = tempfile.mkdtemp(prefix="kvant-numba-cache-")
    env = {**os.environ, "NUMBA_CACHE_DIR": cache} if args.cold else dict(os.environ)
    try:
        runs = {name: [] for name in RUNS}
        cold = kvant_ttft(path, args, env, n_ctx) if args.cold else None
        for _ in range(args.reps):
            for name, fn in RUNS.items():
                runs[name].append(fn(path, args, env, n_ctx) if name in STARTS else fn(path, args, env))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    results = {name: best(r, "ttft_s" if name in STARTS else None) for name, r in runs.items()
               if name != "read bandwidth"}
    results["read bandwidth"] = [r for r in runs["read bandwidth"] if "error" not in r]
    results["kvant cold start"] = cold
    results["rounds"] = runs
    return results


def median_ratio(numerators, denominators, num_key, den_key, scale=1.0):
    """The median over rounds of numerator / denominator, each taken from the same round (None if no round has
    both): a ratio of two figures measured minutes apart would carry the machine's swings."""
    ratios = [scale * n[num_key] / d[den_key] for n, d in zip(numerators, denominators)
              if "error" not in n and "error" not in d]
    return statistics.median(ratios) if ratios else None


def _sampler_defaults():
    from kvant.runtime.sampling import SamplerSettings
    d = SamplerSettings()
    return f"temperature {d.temperature}, top-k {d.top_k}, top-p {d.top_p}, min-p {d.min_p}"


def _f(v, digits=1, suffix=""):
    return "" if v is None else f"{v:.{digits}f}{suffix}"


def speed_rows(label, res, file_bytes, fastest_gb_s, prompts):
    """Rows of the speed table for one file: one per side."""
    lines = []
    ref_side = "llama-bench" if "tg_tok_s" in res["llama-bench"] else "llama-cpp-python"
    ref = res[ref_side]
    keys = [f"pp{n}_tok_s" for n in prompts] + ["tg_tok_s"]
    for side in SIDES:
        r = res[side]
        if "error" in r:
            lines.append(f"| {label} | {side} | {r['error']} |" + " |" * (len(keys) + 5))
            continue
        per_token = r["weight_bytes"] if side == "kvant" else file_bytes
        gb_s = r["tg_tok_s"] * per_token / 1e9
        share = median_ratio(res["rounds"][side], res["rounds"]["read bandwidth"], "tg_tok_s", "gb_s",
                             100 * per_token / 1e9)
        of_fastest = f" ({100 * gb_s / fastest_gb_s:.0f}%)" if fastest_gb_s else ""
        ratio = ""
        if side == "kvant" and "error" not in ref:
            ratio = ", ".join(f"{r[k] / ref[k]:.2f}x" for k in keys) + ("" if ref_side == "llama-bench" else " (vs py)")
        cells = [_f(r[k]) for k in keys] + [f"{per_token / 1e6:.0f}", f"{gb_s:.1f}",
                                            _f(share, 0, "%") + of_fastest,
                                            _f(r.get("load_s"), 2), _f(r.get("rss_mb"), 0), ratio]
        lines.append(f"| {label} | {side} | " + " | ".join(cells) + " |")
    return lines


def start_row(label, res):
    cold, warm, peer = res["kvant cold start"], res["kvant warm start"], res["llama-cpp-python start"]

    def cell(r, key="ttft_s"):
        return "" if r is None else r.get("error") or f"{r[key]:.2f}"
    parts = "" if "error" in warm else (f"{warm['start_s'] + warm['import_s']:.2f} / {warm['load_s']:.2f} / "
                                        f"{warm['prompt_s']:.2f}")
    ratio = "" if "error" in warm or "error" in peer else f"{warm['ttft_s'] / peer['ttft_s']:.2f}x"
    return f"| {label} | {cell(cold)} | {cell(warm)} | {parts} | {cell(peer)} | {ratio} |"


def user_row(label, res, n_tokens):
    tg = res["kvant"].get("tg_tok_s")
    rounds = res["rounds"]

    def cells(name, key):
        r = res[name]
        if "error" in r:
            return [r["error"], ""]
        short = f" ({r['generated']} tokens)" if r["generated"] < n_tokens else ""
        paired = median_ratio(rounds[name], rounds["kvant"], key, "tg_tok_s")
        return [f"{r[key]:.1f}{short}", (f"{r[key] / tg:.2f}x" if tg else "") + (f" ({paired:.2f}x)" if paired else "")]
    columns = cells("qrun generate", "tok_s") + cells("API generate", "first_tok_s") + cells("API generate",
                                                                                         "second_tok_s")
    return f"| {label} | {_f(tg)} | " + " | ".join(columns) + " |"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-p", "--n-prompt", default="128,512", help="prompt lengths, comma-separated (llama-bench's -p)")
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("--types", default="Q4_0,Q8_0,Q4_K_M,Q6_K,IQ4_XS,TQ2_0,F16", help="SmolLM2 types ('' = none)")
    ap.add_argument("--no-gemma", action="store_true")
    ap.add_argument("--tinyllama", default="Q4_K_M,Q8_0", help="types of the random 1.1B llama ('' = none)")
    ap.add_argument("--ttft-prompt", type=int, default=128, help="prompt tokens of the start-up runs")
    ap.add_argument("--user-tokens", type=int, default=128, help="tokens generated by qrun generate and the API")
    ap.add_argument("--user-prompt-chars", type=int, default=80, help="characters of TEXT they continue")
    ap.add_argument("--no-cold", dest="cold", action="store_false",
                    help="skip the cold start; kvant then runs on numba's usual cache")
    ap.add_argument("--no-write", dest="write", action="store_false", help="do not rewrite bench/RESULTS.md")
    ap.add_argument("--llama-bench", default=LLAMA_BENCH, type=os.path.abspath,
                    help=f"llama.cpp's llama-bench to compare with (the AVX2-only build: {LLAMA_BENCH_AVX2})")
    ap.add_argument("--section", default="SPEED", help="the RESULTS.md section (per path) the table goes to")
    args = ap.parse_args()
    prompts = [int(n) for n in args.n_prompt.split(",")]
    files = [(f"SmolLM2 {t}", models.smollm2(t)) for t in args.types.split(",") if t]
    if not args.no_gemma:
        files.append(("gemma-3-270m Q4_K_M", models.gemma3()))
    from make_tinyllama import tinyllama
    files += [(f"random 1.1B llama {t}", tinyllama(t)) for t in args.tinyllama.split(",") if t]

    load0 = os.getloadavg()[0]
    pp_heads = " | ".join(f"pp{n} tok/s" for n in prompts)
    speed = [f"| model | side | {pp_heads} | tg{args.n_gen} tok/s | MB read / token | tg GB/s | % of read bandwidth "
             f"| load s | RSS MB | kvant / llama-bench {', '.join(f'pp{n}' for n in prompts)}, tg{args.n_gen} |",
             "|---|---|" + "---|" * (len(prompts) + 7)]
    start = ["| model | kvant cold s | kvant warm s | warm: start + import / load / prompt + first token s "
             "| llama-cpp-python s | kvant warm / llama-cpp-python |", "|---|---|---|---|---|---|"]
    user = [f"| model | qrun bench tg{args.n_gen} tok/s | qrun generate tok/s | / bench | API generate, 1st call tok/s "
            "| / bench | API generate, 2nd call tok/s | / bench |", "|---|---|---|---|---|---|---|---|"]
    measured = []
    for label, path in files:
        res = measure_file(path, args)
        measured.append((label, path, res))
        print(label, json.dumps(res), flush=True)
    load1 = os.getloadavg()[0]
    bws = [r for _, _, res in measured for r in res["read bandwidth"]]
    bw = max(bws, key=lambda r: r["gb_s"]) if bws else {"error": "no bandwidth run succeeded"}
    ratios = []
    for label, path, res in measured:
        speed += speed_rows(label, res, file_bytes_per_token(path), bw.get("gb_s"), prompts)
        start.append(start_row(label, res))
        user.append(user_row(label, res, args.user_tokens))
        k, ref = res["kvant"], res["llama-bench"]
        if "error" not in k and "error" not in ref:
            ratios.append({key: k[key] / ref[key] for key in ref})

    forced = os.environ.get("KVANT_CPU_PATH")
    command = ((f"KVANT_CPU_PATH={forced} " if forced else "")
               + f"python bench/speed.py --threads {args.threads} --reps {args.reps} -p {args.n_prompt} "
               f"-n {args.n_gen} --types '{args.types}' --tinyllama '{args.tinyllama}'"
               + (" --no-gemma" if args.no_gemma else "") + ("" if args.cold else " --no-cold")
               + ("" if args.section == "SPEED" else f" --section '{args.section}'")
               + ("" if args.llama_bench == LLAMA_BENCH
                  else f" --llama-bench '{os.path.relpath(args.llama_bench, os.path.dirname(HERE))}'"))
    summary = ""
    if ratios:
        keys = [f"pp{n}_tok_s" for n in prompts] + ["tg_tok_s"]
        summary = ("Minimum over the files of kvant / llama-bench (the figure that counts): "
                   + ", ".join(f"{k[:-6]} {min(r[k] for r in ratios):.2f}x" for k in keys) + ".\n\n")
    bw_line = ("" if "error" in bw else
               f"Read bandwidth of this machine (bench/bandwidth.py: a streaming sum over 1 GiB, best of 5, run "
               f"in every round of every file): from {min(r['gb_s'] for r in bws):.1f} to "
               f"**{bw['gb_s']:.1f} GB/s** over the {len(bws)} runs with numba on {args.threads} threads (the fastest "
               f"run: {bw['numba_1t_gb_s']:.1f} GB/s on 1 thread; numpy's sum, 1 thread: "
               f"{bw['numpy_sum_gb_s']:.1f} GB/s).\n")
    body = (
        f"{args.threads} threads; every figure the best of {args.reps} runs, each in a fresh process, interleaved "
        f"per file (kvant bench, qrun generate, Python API, read bandwidth, llama-bench, llama-cpp-python, starts). "
        f"Load average (1 min) at start / end: {load0:.1f} / {load1:.1f} on {os.cpu_count()} CPUs.\n"
        f"{path_line()}; llama-bench {BUILDS.get(args.llama_bench, args.llama_bench)}.\n"
        f"Command: `{command}`\n\n{bw_line}\n"
        f"**Speed.** pp = prompt processing of random tokens from an empty cache, tg = generation, tokens/s, each test "
        f"after one warm-up run (llama-bench's method; kvant's `qrun bench -p {args.n_prompt}`, llama-bench "
        f"`-p {args.n_prompt} -n {args.n_gen} -r 1` per run). MB read / token: kvant, its repacked weight matrices "
        f"(`Transformer.weight_bytes`); llama.cpp, the file's tensor data. Both leave out the token embedding (one "
        f"row of it is read per token) unless it is also the output head (tied: no output.weight), and neither "
        f"counts the KV cache. tg GB/s = MB read / token x tg tokens/s. % of read bandwidth: the tg GB/s of a round "
        f"over the read bandwidth measured in the same round (after kvant's bench and the two user runs, before "
        f"llama-bench), the "
        f"median over the rounds; in brackets, the best tg GB/s over the fastest bandwidth run of the whole table. "
        f"Load s: kvant, Model() (open, tokenizer, repack; kernels from the warm cache); llama-cpp-python, Llama(). "
        f"RSS after the run. The ratio compares with llama-bench (marked 'vs py' where only llama-cpp-python ran).\n"
        f"{summary}" + "\n".join(speed) + "\n\n"
        f"**Start-up.** Seconds from starting the process to the first generated token of a {args.ttft_prompt}-token "
        f"prompt (the start of TEXT in bench/speed.py; context 4096 or the model's, if smaller, for both). kvant "
        f"cold: numba's cache empty (NUMBA_CACHE_DIR a fresh directory), so it includes compiling every kernel the "
        f"file needs; warm: the same directory filled by the cold run (the best run). "
        f"llama-cpp-python: import, Llama(), first token.\n\n" + "\n".join(start) + "\n\n"
        f"**What users run.** Tokens/s of generating {args.user_tokens} tokens with llama.cpp's default sampling "
        f"({_sampler_defaults()}; seed {USER_SEED}) after a short prompt "
        f"(TEXT's first {args.user_prompt_chars} characters), wall clock from the prompt's logits to the last token: "
        f"sampling, detokenizing and writing the streamed text included. qrun generate: the `--stats` line (a fresh "
        f"process, so the first decoded token also loads the decode kernels from the cache); API: "
        f"`Model.generate(stream=True)` in a fresh process, its first call and a second call with the same prompt. "
        f"/ bench: the best run divided by qrun bench's best tg{args.n_gen}; in brackets, each run divided by qrun "
        f"bench's tg{args.n_gen} of the same round (the round's first run), the median over the rounds. The target is "
        f">= 0.90x.\n\n" + "\n".join(user) + "\n")
    publish(path_section(args.section), body, args.write)


if __name__ == "__main__":
    main()
