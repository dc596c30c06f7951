"""How far llama.cpp is from itself: perplexity of the same file with and without its flash-attention path (both
are llama.cpp's defaults somewhere: llama-cpp-python runs without, llama-perplexity with on the CPU). Quantized
activations make these models chaotic, so this spread is the floor under any "same perplexity" comparison. For the
ternary types (--ternary), whose perplexity means nothing, the same for the logits of accuracy.py's 64-token prompt.
Writes the NOISE section of bench/RESULTS.md.

    python bench/llamacpp_noise.py [--types Q4_0,Q4_K_M,Q8_0,Q5_0] [--ternary TQ1_0,TQ2_0] [--chunks 8]
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llamacpp_oracle as oracle  # noqa: E402
import models  # noqa: E402
from accuracy import compare_logits, ternary_prompt, texts  # noqa: E402
from results import update_section  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default="Q4_0,Q4_K_M,Q8_0,Q5_0")
    ap.add_argument("--ternary", default="TQ1_0,TQ2_0")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import llama_cpp
    corpora = texts()
    lines = ["| file | text | llama.cpp PPL | llama.cpp PPL, flash attention | difference |", "|---|---|---|---|---|"]
    def load(path, flash_attn):
        return llama_cpp.Llama(model_path=path, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=args.threads,
                               n_threads_batch=args.threads, logits_all=True, flash_attn=flash_attn, verbose=False)

    for t in filter(None, args.types.split(",")):
        path = models.smollm2(t)
        ppl = {}
        for fa in (False, True):
            llm = load(path, fa)
            for lang, text in corpora.items():
                ppl[fa, lang] = oracle.perplexity(llm, text, 512, args.chunks)
        for lang in corpora:
            a, b = ppl[False, lang], ppl[True, lang]
            lines.append(f"| SmolLM2 {t} | {lang} | {a:.4f} | {b:.4f} | {(b / a - 1) * 100:+.2f}% |")
        print("\n".join(lines[-2:]), flush=True)
    ternary = ["| file | logits of 64 positions, flash attention vs not: max difference, % of the logit range | "
               "argmax equal |", "|---|---|---|"]
    for t in filter(None, args.ternary.split(",")):
        path = models.smollm2(t)
        plain, flash = load(path, False), load(path, True)
        tokens = ternary_prompt(plain)
        pct, same = compare_logits(oracle.logits(flash, tokens), oracle.logits(plain, tokens))
        ternary.append(f"| SmolLM2 {t} | {pct:.2f}% | {same:.0%} |")
        print(ternary[-1], flush=True)
    update_section("NOISE", f"c=512, {args.chunks} chunks per text, llama-cpp-python {oracle.version()}.\n"
                            f"Command: `python bench/llamacpp_noise.py --types {args.types} --ternary {args.ternary} "
                            f"--chunks {args.chunks}`\n\n" + "\n".join(lines) + "\n\n" + "\n".join(ternary) + "\n")


if __name__ == "__main__":
    main()
