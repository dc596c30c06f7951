"""llama-bench's measurement inside kvant: prompt processing of n random tokens from an empty cache, then
generation of n tokens one at a time; the best of the repetitions."""
import os
import time

import numba
import numpy as np


def resident_mb() -> float:
    """Current resident set size of this process in MB (from /proc, so it counts mapped file pages)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_bench(model, n_prompt=128, n_gen=64, repetitions=1, seed=0):
    rng = np.random.default_rng(seed)
    vocab = model.config.n_vocab
    best_pp = best_tg = float("inf")
    for _ in range(repetitions):
        prompt = rng.integers(0, vocab, n_prompt).tolist()
        model.reset()
        t0 = time.perf_counter()
        model.eval(prompt)
        best_pp = min(best_pp, time.perf_counter() - t0)
        model.reset()
        model.eval(prompt[:1])
        t0 = time.perf_counter()
        token = prompt[0]
        for _ in range(n_gen):
            model._step(token)
            token = int(rng.integers(0, vocab))
        best_tg = min(best_tg, time.perf_counter() - t0)
    tg = n_gen / best_tg
    return {
        "model": os.path.basename(model.path),
        "threads": numba.get_num_threads(),
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "pp_tok_s": n_prompt / best_pp,
        "tg_tok_s": tg,
        "tg_gb_s": model.transformer.weight_bytes * tg / 1e9,
        "weight_bytes": model.transformer.weight_bytes,
        "load_s": model.load_seconds,
        "rss_mb": resident_mb(),
    }
