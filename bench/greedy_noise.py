"""Greedy continuation, step by step: how far llama.cpp's logits are from its own, and kvant's from llama.cpp's.

llama.cpp's continuation is fed back through three paths, each scoring the next token at every step:
llama.cpp token by token (its decode path, which picked the text), llama.cpp all tokens in one batch (its prompt
path, same weights and tokens), and kvant token by token. A step where llama.cpp's own two paths already differ by
more than the margin between its two best tokens is a coin toss for any other implementation.
Writes the GREEDY section of bench/RESULTS.md.

    python bench/greedy_noise.py [--model smollm2] [--prompt "The capital of France is"] [-n 16]
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import llamacpp_oracle as oracle  # noqa: E402
from results import update_section  # noqa: E402


def llama_paths(path, prompt, n_tokens, threads):
    """llama.cpp's greedy tokens, and for each step its decode-path and batch-path logits."""
    llm = oracle.load(path, n_threads=threads)
    prompt_ids = oracle.tokenize(llm, prompt, add_bos=oracle.adds_bos(llm))
    generated, _ = oracle.greedy_steps(llm, prompt_ids, n_tokens)
    decode = []
    llm.reset()
    llm.eval(prompt_ids)
    decode.append(np.array(llm.scores[len(prompt_ids) - 1]))
    for i, t in enumerate(generated[:-1]):
        llm.eval([t])
        decode.append(np.array(llm.scores[len(prompt_ids) + i]))
    batch = oracle.logits(llm, prompt_ids + generated[:-1])[len(prompt_ids) - 1:]
    return prompt_ids, generated, np.array(decode), np.asarray(batch), llm


def kvant_decode(path, prompt_ids, generated, threads):
    from kvant.runtime import Model
    from kvant.runtime.model import KVCache
    model = Model(path, n_threads=threads)
    tf = model.transformer
    cache = KVCache(tf.cfg, len(prompt_ids) + len(generated) + 1)
    out = [tf.forward(prompt_ids, 0, cache)[0]]
    for i, t in enumerate(generated[:-1]):
        out.append(tf.forward([t], len(prompt_ids) + i, cache)[0])
    return np.array(out), model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--prompt", default="The capital of France is")
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from kvant.runtime.model_cache import resolve_model
    path = resolve_model(args.model)
    prompt_ids, generated, decode, batch, llm = llama_paths(path, args.prompt, args.n, args.threads)
    ours, model = kvant_decode(path, prompt_ids, generated, args.threads)
    lines = ["| step | llama.cpp token | its margin over the 2nd | llama.cpp decode vs batch, max abs | "
             "llama.cpp batch's choice | kvant vs llama.cpp decode, max abs | kvant's choice |",
             "|---|---|---|---|---|---|---|"]

    def said(logits):
        choice = int(np.argmax(logits))
        return "same" if choice == tok else f"{choice} {model.detokenize([choice])!r}"

    for k, tok in enumerate(generated):
        top2 = np.sort(decode[k])[-2:]
        lines.append(f"| {k} | {tok} {model.detokenize([tok])!r} | {top2[1] - top2[0]:.3f} | "
                     f"{np.abs(decode[k] - batch[k]).max():.3f} | {said(batch[k])} | "
                     f"{np.abs(ours[k] - decode[k]).max():.3f} | {said(ours[k])} |")
    print("\n".join(lines))
    text = "".join(model.detokenize([t]) for t in generated)
    update_section("GREEDY", f"{os.path.basename(path)}, prompt {args.prompt!r}, llama-cpp-python {oracle.version()}, "
                             f"{args.threads} threads. llama.cpp's text: {text!r}. Each step scores llama.cpp's own "
                             f"previous tokens (teacher forcing), so the rows stay comparable after a divergence.\n"
                             f"Command: `python bench/greedy_noise.py --model {args.model} -n {args.n}`\n\n"
                             + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
