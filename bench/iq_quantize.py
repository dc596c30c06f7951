"""kvant's `qconv quantize` against llama-quantize on the whole SmolLM2-135M-Instruct, for the presets below 4 bits
that need an importance matrix: the same F32 file, the same importance matrix, 2 threads each, in the same run.
Per preset: whether the two output files are the same bytes (and, if not, which tensors differ), and the wall time
of each process (best of --reps, interleaved; interpreter start and imports included for qconv, its numba kernels
from the warm on-disk cache after a first untimed run). Writes an IQ QUANTIZE section into bench/RESULTS.md.

    python bench/build_llama_bench.py        # llama-quantize, llama-imatrix
    python bench/iq_quantize.py [--presets IQ2_XXS,...] [--reps 3] [--no-write]
"""
import argparse
import hashlib
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from iq_reference import BASE, BIN, THREADS, WORK, imatrix, texts  # noqa: E402
from results import path_line, publish  # noqa: E402

PRESETS = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M", "Q2_K_S")


def commands(preset, matrix, out):
    qconv = os.path.join(os.path.dirname(sys.executable), "qconv")
    return {"kvant": [qconv, "quantize", "--imatrix", matrix, "--threads", str(THREADS), "--force", BASE, out["kvant"],
                      preset],
            "llama.cpp": [os.path.join(BIN, "llama-quantize"), "--imatrix", matrix, BASE, out["llama.cpp"], preset,
                          str(THREADS)]}


def timed(cmd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{os.path.basename(cmd[0])} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def tensor_hashes(path):
    from kvant.formats.gguf_file import GGUFFile
    with GGUFFile(path) as g:
        return {n: (t.ggml_type.name, hashlib.sha256(g.raw(n).tobytes()).hexdigest()) for n, t in g.tensors.items()}


def compare(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        if fa.read() == fb.read():
            return "yes"
    ta, tb = tensor_hashes(a), tensor_hashes(b)
    bad = sorted(n for n in ta if ta[n] != tb.get(n))
    return f"no: {len(bad)} of {len(ta)} tensors differ ({', '.join(bad[:3])})" if bad else "no: metadata differs"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    _, calibration = texts()
    # the recorded quantize.imatrix.file is the argument as given: the same relative name for both tools
    os.chdir(WORK)
    matrix = os.path.basename(imatrix(calibration))
    rows = []
    for preset in args.presets.split(","):
        out = {tool: os.path.join(WORK, f"iq-quantize-{tool}-{preset}.gguf") for tool in ("kvant", "llama.cpp")}
        cmds = commands(preset, matrix, out)
        timed(cmds["kvant"])  # compiles what the numba cache lacks
        times = {tool: [] for tool in cmds}
        for _ in range(args.reps):
            for tool, cmd in cmds.items():
                times[tool].append(timed(cmd))
        same = compare(out["kvant"], out["llama.cpp"])
        rows.append((preset, min(times["kvant"]), min(times["llama.cpp"]), times, same))
        print(preset, f"kvant {min(times['kvant']):.2f} s, llama-quantize {min(times['llama.cpp']):.2f} s, same "
                      f"bytes: {same}", flush=True)
        for path in out.values():
            os.unlink(path)
    lines = [f"`python bench/iq_quantize.py --presets {args.presets} --reps {args.reps}` ({path_line()}). "
             f"SmolLM2-135M-Instruct F32 -> each preset with the importance matrix of IQ PERPLEXITY (llama-imatrix on "
             f"the second halves of ../shared/corpora en + ru), {THREADS} threads each; wall time per process, the "
             f"best of {args.reps} interleaved runs (qconv: interpreter start and imports included, kernels from "
             "numba's warm cache).", "",
             "| preset | qconv quantize s | llama-quantize s | kvant / llama.cpp time | all runs kvant / llama.cpp s "
             "| same bytes |", "|---|---|---|---|---|---|"]
    for preset, k, q, times, same in rows:
        runs = " / ".join(f"{a:.1f}" for a in times["kvant"]) + " ; " + " / ".join(f"{b:.1f}" for b in times["llama.cpp"])
        lines.append(f"| {preset} | {k:.2f} | {q:.2f} | {k / q:.2f}x | {runs} | {same} |")
    publish("IQ QUANTIZE", "\n".join(lines), not args.no_write)


if __name__ == "__main__":
    main()
