"""kvant against llama.cpp on the same files: token ids, perplexity, logits. Writes the accuracy table of
bench/RESULTS.md (between its ACCURACY markers) and prints it.

    python bench/accuracy.py [--chunks 8] [--types Q4_0,Q8_0,...] [--threads 2]

Per SmolLM2 type (and gemma-3-270m Q4_K_M): kvant's and llama.cpp's perplexity on ../shared/corpora/en.txt and
ru.txt (c=512, llama-perplexity's method), whether the token ids of both whole texts are identical, and for TQ1_0 /
TQ2_0 (never trained ternary, so their perplexity means nothing) the logits of a 64-token prompt: largest
difference as a share of each position's logit range, and argmax agreement.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llamacpp_oracle as oracle  # noqa: E402
import models  # noqa: E402
from results import update_section  # noqa: E402

CORPORA = os.path.join(HERE, "..", "..", "shared", "corpora")
PROMPT = ("The quick brown fox jumps over the lazy dog. Книга - это зеркало, в котором отражается душа. "
          "In 1492, Columbus sailed the ocean blue; 3 + 4 = 7. " * 2)
TERNARY = {"TQ1_0", "TQ2_0"}


def texts():
    out = {}
    for lang in ("en", "ru"):
        with open(os.path.join(CORPORA, f"{lang}.txt"), encoding="utf-8") as f:
            out[lang] = f.read()
    return out


def compare_logits(mine, theirs):
    """(largest difference at a position as a % of theirs' logit range there, share of positions with one argmax)."""
    spread = theirs.max(axis=1) - theirs.min(axis=1)
    return (float(np.max(np.abs(mine - theirs).max(axis=1) / spread) * 100),
            float(np.mean(mine.argmax(axis=1) == theirs.argmax(axis=1))))


def ternary_prompt(llm):
    """The 64 tokens whose logits the ternary rows compare."""
    return oracle.tokenize(llm, PROMPT, add_bos=oracle.adds_bos(llm))[:64]


def measure(label, path, corpora, chunks, threads, ternary):
    from kvant.runtime import Model
    row = {"type": label}
    ours = Model(path, n_threads=threads, n_ctx=512)
    ref = oracle.load(path, n_ctx=512, n_threads=threads)
    row["tokens_equal"] = all(
        ours.tokenize(t, add_bos=False) == oracle.tokenize(ref, t, add_bos=False) for t in corpora.values())
    if ternary:
        tokens = ternary_prompt(ref)
        theirs = oracle.logits(ref, tokens)
        ours.reset()
        mine = ours.transformer.forward(tokens, 0, ours.cache, logits_from=0)
        row["logit_diff_pct"], row["argmax_equal"] = compare_logits(mine, theirs)
    else:
        for lang, text in corpora.items():
            t0 = time.perf_counter()
            row[f"kvant_{lang}"] = ours.perplexity(text, n_ctx=512, n_chunks=chunks).ppl
            row[f"t_{lang}"] = time.perf_counter() - t0
            row[f"llamacpp_{lang}"] = oracle.perplexity(ref, text, 512, chunks)
    ours.close()
    return row


def table(rows, chunks):
    lines = [f"| type | kvant PPL en | llama.cpp PPL en | diff | kvant PPL ru | llama.cpp PPL ru | diff | "
             f"tokens equal (en+ru) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "logit_diff_pct" in r:
            lines.append(f"| {r['type']} | logits of 64 positions: max diff {r['logit_diff_pct']:.2f}% of range, "
                         f"argmax equal {r['argmax_equal'] * 100:.0f}% | | | | | | {_yes(r['tokens_equal'])} |")
            continue
        d_en = (r["kvant_en"] / r["llamacpp_en"] - 1) * 100
        d_ru = (r["kvant_ru"] / r["llamacpp_ru"] - 1) * 100
        lines.append(f"| {r['type']} | {r['kvant_en']:.4f} | {r['llamacpp_en']:.4f} | {d_en:+.2f}% | "
                     f"{r['kvant_ru']:.4f} | {r['llamacpp_ru']:.4f} | {d_ru:+.2f}% | {_yes(r['tokens_equal'])} |")
    return "\n".join(lines)


def _yes(flag):
    return "yes" if flag else "NO"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--types", default=",".join(models.SMOLLM2_TYPES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-gemma", action="store_true")
    args = ap.parse_args()
    corpora = texts()
    rows = []
    for t in args.types.split(","):
        rows.append(measure(f"SmolLM2 {t}", models.smollm2(t), corpora, args.chunks, args.threads, t in TERNARY))
        print(rows[-1], flush=True)
    if not args.no_gemma:
        rows.append(measure("gemma-3-270m Q4_K_M", models.gemma3(), corpora, args.chunks, args.threads, False))
        print(rows[-1], flush=True)
    body = table(rows, args.chunks)
    command = f"python bench/accuracy.py --chunks {args.chunks} --threads {args.threads}"
    update_section("ACCURACY", f"Perplexity at c=512 over {args.chunks} chunks per text, llama.cpp through "
                               f"llama-cpp-python {oracle.version()} (its default: no flash attention).\n"
                               f"Command: `{command}`\n\n{body}\n")
    print(body)


if __name__ == "__main__":
    main()
