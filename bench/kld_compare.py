"""KL divergence by kvant and by llama-perplexity on the same pair of files: the low-bit issue's check that both tools
give the same mean KLD and same-top-p (within 2%).

The base is SmolLM2-135M-Instruct's F32 file; llama-perplexity writes its log-probabilities (c=512, 8 chunks of the
first half of ../shared/corpora/{en,ru}.txt, the evaluation text of bench/iq_reference.py), then each tool scores
the quantized files made by bench/iq_reference.py against that one base file. Writes a KLD section into
bench/RESULTS.md.

    python bench/kld_compare.py [--types IQ3_S,IQ2_XXS] [--no-write]
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from iq_reference import BASE, BIN, CHUNKS, CTX, LANGS, THREADS, WORK, run, texts  # noqa: E402
from results import path_line, publish  # noqa: E402

PATTERNS = {"kld_mean": r"Mean    KLD:\s+(-?[0-9.]+)", "same_top_p": r"Same top p:\s+([0-9.]+)",
            "ppl_q": r"Mean PPL\(Q\)\s+:\s+([0-9.]+)"}


def base_file(lang, text):
    path = os.path.join(WORK, f"kld-base-SmolLM2-F32-{lang}.bin")
    if not os.path.exists(path):
        run([os.path.join(BIN, "llama-perplexity"), "-m", BASE, "-f", text, "-c", str(CTX), "-b", str(CTX),
             "--chunks", str(CHUNKS), "-t", str(THREADS), "--kl-divergence-base", path])
    return path


def llama_kld(model, base):
    out = run([os.path.join(BIN, "llama-perplexity"), "-m", model, "-c", str(CTX), "-b", str(CTX), "-t", str(THREADS),
               "--kl-divergence-base", base, "--kl-divergence"])
    found = {k: float(re.search(p, out).group(1)) for k, p in PATTERNS.items()}
    found["same_top_p"] /= 100
    return found


def kvant_kld(model, base):
    out = run([sys.executable, "-m", "kvant.runtime.cli", "perplexity", model, "--kl-divergence-base", base,
               "--kl-divergence", "-t", str(THREADS), "--json"], stdout_only=True)
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="IQ3_S,IQ2_XXS")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    evaluation, _ = texts()
    lines = [f"`python bench/kld_compare.py --types {args.types}` ({path_line()}; base: SmolLM2-135M-Instruct F32, "
             f"its log-probabilities written by llama-perplexity, c={CTX}, {CHUNKS} chunks of the evaluation text of "
             f"IQ PERPLEXITY; {THREADS} threads)", "",
             "| file | text | mean KLD llama.cpp | kvant | diff | same top p llama.cpp | kvant | diff |",
             "|---|---|---|---|---|---|---|---|"]
    worst = 0.0
    for qtype in args.types.split(","):
        model = os.path.join(WORK, f"SmolLM2-135M-Instruct-{qtype}.gguf")
        if not os.path.exists(model):
            sys.exit(f"{model} is missing: python bench/iq_reference.py --types {qtype}")
        for lang in LANGS:
            base = base_file(lang, evaluation[lang])
            a, b = llama_kld(model, base), kvant_kld(model, base)
            d_kld, d_top = b["kld_mean"] / a["kld_mean"] - 1, b["same_top_p"] / a["same_top_p"] - 1
            worst = max(worst, abs(d_kld), abs(d_top))
            lines.append(f"| {qtype} | {lang} | {a['kld_mean']:.6f} | {b['kld_mean']:.6f} | {100 * d_kld:+.2f}% | "
                         f"{100 * a['same_top_p']:.3f}% | {100 * b['same_top_p']:.3f}% | {100 * d_top:+.2f}% |")
            print(lines[-1], flush=True)
    lines += ["", f"Largest difference: {100 * worst:.2f}% (the low-bit issue's bound: 2%)."]
    publish("KLD", "\n".join(lines), not args.no_write)


if __name__ == "__main__":
    main()
