"""Generation speed with a JSON schema enforced (runtime/constrained.py, llguidance's token mask) against free
generation, on the same model, prompt and threads, interleaved in one run; and the mask's own cost per token.

    python bench/structured_speed.py [--model Q4_K_M] [--threads 2] [--reps 3] [-n 128] [--no-write]

The schema (an array of short strings with no item limit) never ends the text before -n tokens, so both runs
generate exactly -n tokens (free generation with ignore_eos).
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from higgs_quality import base_f32  # noqa: E402
from higgs_speed import requantized  # noqa: E402
from results import path_line, path_section, publish  # noqa: E402

SCHEMA = {"type": "array", "items": {"type": "string", "maxLength": 24}}
PROMPT = "List the names of rivers, cities and mountains of Europe as a JSON array:\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="Q4_K_M", help="SmolLM2-135M-Instruct in this preset (made by qconv)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from kvant.runtime import Model
    from kvant.runtime import constrained
    path = requantized(base_f32(), args.model)
    m = Model(path, n_threads=args.threads)
    best = {"free": 0.0, "schema": 0.0}
    mask_ms = []
    original_mask = constrained.Constraint.mask

    def timed_mask(self, logits):
        t0 = time.perf_counter()
        out = original_mask(self, logits)
        mask_ms.append(1e3 * (time.perf_counter() - t0))
        return out
    constrained.Constraint.mask = timed_mask
    for _ in range(args.reps):
        for kind in best:
            m.reset()
            extra = {"json_schema": SCHEMA} if kind == "schema" else {"ignore_eos": True}
            m.generate(PROMPT, max_tokens=args.n, temperature=0.8, seed=1, **extra)
            s = m.stats
            best[kind] = max(best[kind], s.generated_tokens / s.decode_seconds)
    step_ms = 1e3 / best["free"]
    mask = sorted(mask_ms)[len(mask_ms) // 2]
    rows = ["| model | free tok/s | with JSON schema tok/s | ratio | mask ms/token (median) | decode step ms |",
            "|---|---|---|---|---|---|",
            f"| SmolLM2-135M-Instruct {args.model} | {best['free']:.1f} | {best['schema']:.1f} | "
            f"{best['schema'] / best['free']:.2f}x | {mask:.3f} | {step_ms:.2f} |"]
    body = "\n".join([f"Command: `python bench/structured_speed.py --model {args.model} --threads {args.threads} "
                      f"--reps {args.reps} -n {args.n}`", "", path_line() + f"; {args.threads} threads, best of "
                      f"{args.reps} interleaved rounds, {args.n} tokens each", "", *rows])
    print(body)
    publish(path_section("STRUCTURED OUTPUT SPEED"), body, write=not args.no_write)


if __name__ == "__main__":
    main()
