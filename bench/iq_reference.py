"""The IQ1-IQ3 types on a real model, kvant against llama.cpp: llama.cpp writes the files, both tools score them.

For SmolLM2-135M-Instruct (its F32 file in bench/.work) this makes an importance matrix with llama-imatrix on
calibration text (the second halves of ../shared/corpora en.txt and ru.txt, one after the other), quantizes the F32
file with llama-quantize --imatrix to each type, and measures perplexity (c=512, 8 chunks) on the evaluation text
(the first halves) with llama-perplexity and with `qrun perplexity`, both on 2 threads. Writes an IQ PERPLEXITY
section into bench/RESULTS.md with the command, and bench/.work/iq_reference.json with the figures.

    python bench/build_llama_bench.py                   # llama-quantize, llama-imatrix, llama-perplexity
    python bench/iq_reference.py [--types IQ2_XXS,...] [--no-write]

SmolLM2's rows are 576 long, not a multiple of 256: llama-quantize gives those matrices a fallback type and only the
FFN down projections (1536) get the IQ type itself; the section says how many tensors of each type a file holds.
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, ".work")
BIN = os.path.join(WORK, "llama.cpp-build", "bin")
CORPORA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "corpora")
BASE = os.path.join(WORK, "SmolLM2-135M-Instruct-F32.gguf")
TYPES = ("IQ3_S", "IQ3_XXS", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S")
LANGS = ("en", "ru")
CTX, CHUNKS, THREADS = 512, 8, 2

sys.path.insert(0, HERE)
from results import path_line, publish  # noqa: E402


def halves(lang):
    with open(os.path.join(CORPORA, f"{lang}.txt"), encoding="utf-8") as f:
        text = f.read()
    cut = text.index("\n", len(text) // 2) + 1
    return text[:cut], text[cut:]


def texts():
    """(evaluation files per language, the calibration file)."""
    evaluation = {}
    calibration = []
    for lang in LANGS:
        first, second = halves(lang)
        evaluation[lang] = os.path.join(WORK, f"eval-{lang}.txt")
        with open(evaluation[lang], "w", encoding="utf-8") as f:
            f.write(first)
        calibration.append(second)
    path = os.path.join(WORK, "calibration-en-ru.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(calibration))
    return evaluation, path


def run(cmd, stdout_only=False):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd[:2])} failed:\n{r.stderr[-3000:]}")
    return r.stdout if stdout_only else r.stdout + r.stderr


def imatrix(calibration):
    out = os.path.join(WORK, "SmolLM2-135M-Instruct.imatrix.gguf")
    if not os.path.exists(out):
        run([os.path.join(BIN, "llama-imatrix"), "-m", BASE, "-f", calibration, "-o", out, "-c", str(CTX),
             "-t", str(THREADS), "--no-ppl"])
    return out


def quantize(qtype, matrix):
    out = os.path.join(WORK, f"SmolLM2-135M-Instruct-{qtype}.gguf")
    if not os.path.exists(out):
        run([os.path.join(BIN, "llama-quantize"), "--imatrix", matrix, BASE, out, qtype, str(THREADS)])
    return out


def tensor_types(path):
    from gguf import GGUFReader
    counts = {}
    for t in GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def llama_ppl(model, text):
    out = run([os.path.join(BIN, "llama-perplexity"), "-m", model, "-f", text, "-c", str(CTX), "--chunks",
               str(CHUNKS), "-t", str(THREADS), "-b", str(CTX)])
    return float(re.search(r"Final estimate: PPL = ([0-9.]+)", out).group(1))


def kvant_ppl(model, text):
    out = run([sys.executable, "-m", "kvant.runtime.cli", "perplexity", model, "-f", text, "-c", str(CTX),
               "--chunks", str(CHUNKS), "-t", str(THREADS), "--json"], stdout_only=True)
    return float(json.loads(out.strip().splitlines()[-1])["ppl"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    for tool in ("llama-imatrix", "llama-quantize", "llama-perplexity"):
        if not os.path.exists(os.path.join(BIN, tool)):
            sys.exit(f"{tool} is not built: python bench/build_llama_bench.py")
    if not os.path.exists(BASE):
        sys.exit(f"{BASE} is missing (qconv convert of SmolLM2-135M-Instruct to F32)")
    evaluation, calibration = texts()
    matrix = imatrix(calibration)
    rows = []
    for qtype in args.types.split(","):
        model = quantize(qtype, matrix)
        row = {"type": qtype, "MB": os.path.getsize(model) / 1e6, "tensors": tensor_types(model)}
        for lang in LANGS:
            row[f"llama_{lang}"] = llama_ppl(model, evaluation[lang])
            row[f"kvant_{lang}"] = kvant_ppl(model, evaluation[lang])
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(os.path.join(WORK, "iq_reference.json"), "w") as f:
        json.dump(rows, f, indent=1)
    lines = [f"`python bench/iq_reference.py --types {args.types}` ({path_line()}; SmolLM2-135M-Instruct F32 "
             f"quantized by llama-quantize with an importance matrix from llama-imatrix on the second halves of "
             f"../shared/corpora en + ru; perplexity c={CTX}, {CHUNKS} chunks of the first halves, {THREADS} threads)",
             "", "| type | MB | tensors by type | PPL en llama.cpp | kvant | diff | PPL ru llama.cpp | kvant | diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["type"], f"{r['MB']:.1f}", " ".join(f"{k}:{v}" for k, v in sorted(r["tensors"].items()))]
        for lang in LANGS:
            a, b = r[f"llama_{lang}"], r[f"kvant_{lang}"]
            cells += [f"{a:.3f}", f"{b:.3f}", f"{100 * (b / a - 1):+.2f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    worst = max(abs(r[f"kvant_{lang}"] / r[f"llama_{lang}"] - 1) for r in rows for lang in LANGS)
    lines += ["", f"Largest difference between the tools: {100 * worst:.2f}% (the low-bit issue's bound: 1%). SmolLM2's "
                  "576-element rows are not a multiple of 256, so only its FFN down projections hold the IQ type."]
    publish("IQ PERPLEXITY", "\n".join(lines), not args.no_write)


if __name__ == "__main__":
    main()
