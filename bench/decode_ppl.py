"""Perplexity through the decode step, one token at a time, on each kernel path: what a path's activation rounding
costs where it is used (generation), which `qrun perplexity` (batched prefill: the GEMMs) never runs.

The HIGGS matvecs round the rotated x differently per path (int8 per 64 on the x86 paths, floats on the float
path); the integer types' matvecs all round as llama.cpp (Q8_0 / Q8_K). Each path runs in
its own process (KVANT_CPU_PATH; "native" = the CPU's own): chunks of --ctx tokens of the text from its start, the
cache cleared per chunk, every token through the decode step (Model.perplexity with n_batch 1: llama-perplexity's
rule, each chunk's second half scored). Prints one line per path and language: PPL and its difference from the
first path.

    python bench/decode_ppl.py FILE [--ctx 256] [--chunks 2] [--paths native,avx2,float] [--langs en,ru]
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPORA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "corpora")

_CHILD = r"""
import json, sys
from kvant.runtime import Model
path, text_file, ctx, chunks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m = Model(path, n_ctx=ctx, n_threads=2, n_batch=1)      # a batch of one token: the decode step's matvecs
print(json.dumps({"ppl": m.perplexity(open(text_file, encoding="utf-8").read(), ctx, chunks).ppl}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--paths", default="native,avx2,float")
    ap.add_argument("--langs", default="en,ru")
    args = ap.parse_args()
    for lang in args.langs.split(","):
        first = None
        for path in args.paths.split(","):
            env = dict(os.environ)
            env.pop("KVANT_CPU_PATH", None)
            if path != "native":
                env["KVANT_CPU_PATH"] = path
            r = subprocess.run([sys.executable, "-c", _CHILD, args.file, os.path.join(CORPORA, f"{lang}.txt"),
                                str(args.ctx), str(args.chunks)], env=env, capture_output=True, text=True)
            if r.returncode:
                print(f"{lang} {path}: failed: {r.stderr.strip().splitlines()[-1]}", flush=True)
                continue
            ppl = json.loads(r.stdout.strip().splitlines()[-1])["ppl"]
            first = ppl if first is None else first
            print(f"{lang} {path:>7}: PPL {ppl:.4f} ({100 * (ppl / first - 1):+.3f}% of {args.paths.split(',')[0]})",
                  flush=True)


if __name__ == "__main__":
    main()
