r"""Generation's share of the read bandwidth, measured where the machine cannot move between the two figures.

This machine's read bandwidth swings between about 26 and 57 GB/s over minutes (other tenants of the host), so a
decode speed and a bandwidth measured even seconds apart can differ by the swing. Here one process alternates, many
times, one decode step (one token at position 4, the weights read once) and a streaming read of as many bytes as
that step reads (bench/bandwidth.py's stream_sum on the same threads); the share is the median over the pairs of
stream time / step time. kvant and llama.cpp (through llama-cpp-python: its eval of one token, a few microseconds
of Python on a step of tens of milliseconds) each run in a process of their own, one after the other, per file.

    python bench/decode_bandwidth.py [--threads 2] [--pairs 100] [--tinyllama Q4_K_M,Q8_0] [--no-write]

Bytes per step: kvant, its repacked weight matrices (Transformer.weight_bytes); llama.cpp, the file's tensor data
but the token embedding (bench/speed.py's file_bytes_per_token). Neither counts the KV cache (5 positions).
Both processes run with OpenMP's default waiting (llama-cpp-python's ggml uses OpenMP too: with
OMP_WAIT_POLICY=passive its decode step took 40 ms instead of 24; a stream just before a step did not slow it).
Writes the DECODE BANDWIDTH section of bench/RESULTS.md.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from results import path_line, path_section, publish  # noqa: E402

POSITION = 4         # tokens in the cache before the measured step

# child process: alternate steps and streams; print one JSON line
_CHILD = r"""
import json, sys, time
import numpy as np, numba
sys.path.insert(0, sys.argv[1])
from bandwidth import CHUNKS, LANES, stream_sum
side, path, threads, pairs = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
POSITION = int(sys.argv[6])
clock = time.perf_counter
prompt = list(range(1, POSITION + 1))
if side == "kvant":
    from kvant.runtime import Model
    m = Model(path, n_threads=threads)
    step_bytes = m.transformer.weight_bytes
    m.eval(prompt)
    def step():
        m._tokens = m._tokens[:POSITION]
        t0 = clock(); m._step(POSITION + 1); return clock() - t0
else:
    import llama_cpp
    from speed import file_bytes_per_token
    llm = llama_cpp.Llama(model_path=path, n_ctx=64, n_batch=64, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    step_bytes = file_bytes_per_token(path)
    llm.eval(prompt)
    def step():
        llm.n_tokens = POSITION
        t0 = clock(); llm.eval([POSITION + 1]); return clock() - t0
numba.set_num_threads(threads)
n = step_bytes // 4 // (LANES * CHUNKS) * LANES * CHUNKS
a = np.ones(n, np.float32).reshape(CHUNKS, -1, LANES)
partial = np.zeros((CHUNKS, LANES), np.float32)
def stream():
    t0 = clock(); stream_sum(partial, a); return (clock() - t0) * step_bytes / a.nbytes
for _ in range(3):
    step(); stream()
steps, streams = [], []
for _ in range(pairs):
    steps.append(step()); streams.append(stream())
steps, streams = np.array(steps), np.array(streams)
print(json.dumps({"step_bytes": int(step_bytes), "share": float(np.median(streams / steps)),
                  "share_q25": float(np.quantile(streams / steps, 0.25)),
                  "share_q75": float(np.quantile(streams / steps, 0.75)),
                  "step_gb_s": float(np.median(step_bytes / steps) / 1e9),
                  "stream_gb_s": float(np.median(step_bytes / streams) / 1e9),
                  "stream_gb_s_max": float(np.max(step_bytes / streams) / 1e9)}))
"""


def measure(side, path, args):
    r = subprocess.run([sys.executable, "-c", _CHILD, HERE, side, path, str(args.threads), str(args.pairs),
                        str(POSITION)], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1][:120]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def row(label, side, r):
    if "error" in r:
        return f"| {label} | {side} | {r['error']} | | | | |"
    return (f"| {label} | {side} | {r['step_bytes'] / 1e6:.0f} | {r['step_gb_s']:.1f} | {r['stream_gb_s']:.1f} "
            f"(max {r['stream_gb_s_max']:.1f}) | **{100 * r['share']:.0f}%** | "
            f"{100 * r['share_q25']:.0f}-{100 * r['share_q75']:.0f}% |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--tinyllama", default="Q4_K_M,Q8_0", help="types of the random 1.1B llama")
    ap.add_argument("--no-write", dest="write", action="store_false", help="do not rewrite bench/RESULTS.md")
    args = ap.parse_args()
    from make_tinyllama import tinyllama
    lines = ["| model | side | MB read / step | step GB/s (median) | stream GB/s (median) | share of the stream "
             "(median of pairs) | middle half of the pairs |", "|---|---|---|---|---|---|---|"]
    for t in [t for t in args.tinyllama.split(",") if t]:
        label = f"random 1.1B llama {t}"
        for side in ("kvant", "llama.cpp"):
            r = measure(side, tinyllama(t), args)
            print(label, side, json.dumps(r), flush=True)
            lines.append(row(label, side, r))
    command = f"python bench/decode_bandwidth.py --threads {args.threads} --pairs {args.pairs} " \
              f"--tinyllama '{args.tinyllama}'"
    body = (f"{path_line()}.\n"
            f"Command: `{command}`\n\n"
            f"Per file and side, one process alternates {args.pairs} times a decode step of one token (at position "
            f"{POSITION}) and a streaming read of as many bytes on the same {args.threads} threads (bench/"
            f"bandwidth.py's sum); share = stream time / step time, the median over the pairs, so both figures of "
            f"a pair see the same state of this machine's swinging bandwidth. The GB/s columns are medians, for "
            f"scale; they move with the machine between processes.\n\n" + "\n".join(lines) + "\n")
    publish(path_section("DECODE BANDWIDTH"), body, args.write)


if __name__ == "__main__":
    main()
