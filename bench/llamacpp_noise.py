"""How far llama.cpp is from itself: perplexity of the same file in llama.cpp's default configuration and in two
others it also runs (VARIANTS: flash attention, llama-perplexity's CPU default; one token per graph, the decode
path). Quantized activations make these models chaotic, so this spread is the floor under any "same perplexity"
comparison. For the
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


# llama.cpp's configurations compared with its default (llama-cpp-python's: no flash attention, 512-token batches):
# flash attention on (llama-perplexity's CPU default), and one token per graph (n_ubatch=1: the decode path, per-row
# dot products instead of the batched GEMM). Each is llama.cpp computing the same model; none is more right.
VARIANTS = {
    "flash attention": {"flash_attn": True},
    "one token a step": {"n_ubatch": 1},
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default="Q4_0,Q4_K_M,Q8_0,Q5_0")
    ap.add_argument("--ternary", default="TQ1_0,TQ2_0")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import llama_cpp
    corpora = texts()

    def load(path, **variant):
        settings = dict(n_ctx=512, n_batch=512, n_ubatch=512, n_threads=args.threads, n_threads_batch=args.threads,
                        logits_all=True, flash_attn=False, verbose=False)
        return llama_cpp.Llama(model_path=path, **{**settings, **variant})

    head = "| file | text | llama.cpp PPL | " + " | ".join(f"{v} | difference" for v in VARIANTS) + " |"
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for t in filter(None, args.types.split(",")):
        path = models.smollm2(t)
        ppl = {}
        for name, variant in {"default": {}, **VARIANTS}.items():
            llm = load(path, **variant)
            for lang, text in corpora.items():
                ppl[name, lang] = oracle.perplexity(llm, text, 512, args.chunks)
            del llm
        for lang in corpora:
            base = ppl["default", lang]
            cells = " | ".join(f"{ppl[v, lang]:.4f} | {(ppl[v, lang] / base - 1) * 100:+.2f}%" for v in VARIANTS)
            lines.append(f"| SmolLM2 {t} | {lang} | {base:.4f} | {cells} |")
        print("\n".join(lines[-2:]), flush=True)

    head = ("| file | " + " | ".join(f"logits of 64 positions, {v} vs default: max difference, % of the logit range "
                                    f"| argmax equal" for v in VARIANTS) + " |")
    ternary = [head, "|---" * head.count(" | ") + "|---|"]
    for t in filter(None, args.ternary.split(",")):
        path = models.smollm2(t)
        plain = load(path)
        tokens = ternary_prompt(plain)
        reference = oracle.logits(plain, tokens)
        cells = []
        for variant in VARIANTS.values():
            pct, same = compare_logits(oracle.logits(load(path, **variant), tokens), reference)
            cells.append(f"{pct:.2f}% | {same:.0%}")
        ternary.append(f"| SmolLM2 {t} | " + " | ".join(cells) + " |")
        print(ternary[-1], flush=True)
    update_section("NOISE", f"c=512, {args.chunks} chunks per text, llama-cpp-python {oracle.version()}.\n"
                            f"Command: `python bench/llamacpp_noise.py --types {args.types} --ternary {args.ternary} "
                            f"--chunks {args.chunks}`\n\n" + "\n".join(lines) + "\n\n" + "\n".join(ternary) + "\n")


if __name__ == "__main__":
    main()
