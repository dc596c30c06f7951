r"""What users run against the bench, in one process: Model.generate (streamed, as `qrun generate` runs it) and
`qrun bench`'s generation measurement, alternated, so both see the same state of this machine's swinging bandwidth.

bench/speed.py measures the same two in separate processes, each the best of three runs; there a fast minute for
one of them moves their ratio by 10-40%. Here one process per file loads the model once and alternates --pairs
times: (a) Model.generate(stream=True) of --tokens tokens after a short prompt with llama.cpp's default sampler
(seed 1), each piece written and flushed to a file on os.devnull as `qrun generate` writes and flushes stdout, timed
from the prompt's logits to the last token (stats.prefill_seconds taken out, as qrun's --stats line does); (b) the
generation test of `qrun bench -n 64` (kvant.runtime.bench: 64 tokens, one at a time, from an empty cache). The
figure is the median over the pairs of (a) / (b). `qrun generate` is this loop plus starting the process.

    python bench/user_speed.py [--threads 2] [--pairs 10] [--types Q4_0,...] [--no-gemma] [--tinyllama Q4_K_M,Q8_0]
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import models  # noqa: E402
from results import publish  # noqa: E402
from speed import TEXT, USER_SEED  # noqa: E402

BENCH_TOKENS = 64     # `qrun bench`'s default -n

_CHILD = r"""
import json, os, sys, time
import numpy as np
from kvant.runtime import Model
from kvant.runtime.bench import _time_gen
path, threads, pairs, n_tokens, text, seed, bench_tokens = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                                            int(sys.argv[4]), sys.argv[5], int(sys.argv[6]),
                                                            int(sys.argv[7]))
m = Model(path, n_threads=threads)
sink = open(os.devnull, "w")
rng = np.random.default_rng(0)
generated = []
def generate():
    t0 = time.perf_counter()
    for piece in m.generate(text, n_tokens, seed=seed, stream=True):
        sink.write(piece)
        sink.flush()
    generated.append(m.stats.generated_tokens)
    return m.stats.generated_tokens / (time.perf_counter() - t0 - m.stats.prefill_seconds)
def bench():
    tokens = rng.integers(0, m.config.n_vocab, bench_tokens + 1).tolist()
    return bench_tokens / _time_gen(m, tokens[0], tokens[1:])
generate(); bench()                                   # warm-up, as both commands warm up
users, benches = [], []
for _ in range(pairs):
    users.append(generate())
    benches.append(bench())
ratios = np.array(users) / np.array(benches)
print(json.dumps({"ratio": float(np.median(ratios)), "q25": float(np.quantile(ratios, 0.25)),
                  "q75": float(np.quantile(ratios, 0.75)), "user_tok_s": float(np.median(users)),
                  "bench_tok_s": float(np.median(benches)), "generated": min(generated)}))
"""


def measure(path, args):
    r = subprocess.run([sys.executable, "-c", _CHILD, path, str(args.threads), str(args.pairs), str(args.tokens),
                        TEXT[:args.prompt_chars], str(USER_SEED), str(BENCH_TOKENS)], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1][:120]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def row(label, r, n_tokens):
    if "error" in r:
        return f"| {label} | {r['error']} | | | |"
    short = f" ({r['generated']} tokens)" if r["generated"] < n_tokens else ""
    return (f"| {label} | {r['user_tok_s']:.1f}{short} | {r['bench_tok_s']:.1f} | **{r['ratio']:.2f}x** | "
            f"{r['q25']:.2f}-{r['q75']:.2f}x |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=128, help="tokens each generate call makes")
    ap.add_argument("--prompt-chars", type=int, default=80, help="characters of bench/speed.py's TEXT continued")
    ap.add_argument("--types", default="Q4_0,Q8_0,Q4_K_M,Q6_K,IQ4_XS,TQ2_0,F16", help="SmolLM2 types ('' = none)")
    ap.add_argument("--no-gemma", action="store_true")
    ap.add_argument("--tinyllama", default="Q4_K_M,Q8_0", help="types of the random 1.1B llama ('' = none)")
    ap.add_argument("--no-write", dest="write", action="store_false", help="do not rewrite bench/RESULTS.md")
    args = ap.parse_args()
    files = [(f"SmolLM2 {t}", models.smollm2(t)) for t in args.types.split(",") if t]
    if not args.no_gemma:
        files.append(("gemma-3-270m Q4_K_M", models.gemma3()))
    from make_tinyllama import tinyllama
    files += [(f"random 1.1B llama {t}", tinyllama(t)) for t in args.tinyllama.split(",") if t]
    lines = [f"| model | generate tok/s (median) | bench tg{BENCH_TOKENS} tok/s (median) | generate / bench "
             "(median of pairs) | middle half of the pairs |", "|---|---|---|---|---|"]
    for label, path in files:
        r = measure(path, args)
        print(label, json.dumps(r), flush=True)
        lines.append(row(label, r, args.tokens))
    command = (f"python bench/user_speed.py --threads {args.threads} --pairs {args.pairs} --types '{args.types}' "
               f"--tinyllama '{args.tinyllama}'" + (" --no-gemma" if args.no_gemma else ""))
    body = (f"Command: `{command}`\n\n"
            f"Per file, one process alternates {args.pairs} times Model.generate(stream=True) of {args.tokens} tokens "
            f"(llama.cpp's default sampler, seed {USER_SEED}, each piece written and flushed as `qrun generate` "
            f"does, prefill taken out) and `qrun bench`'s generation test (tg{BENCH_TOKENS}); the figure is the "
            f"median over the pairs of their tokens/s ratio. The target is >= 0.90x.\n\n" + "\n".join(lines) + "\n")
    publish("USER SPEED", body, args.write)


if __name__ == "__main__":
    main()
