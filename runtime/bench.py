"""llama-bench's measurement inside kvant: prompt processing of n random tokens (one test per prompt length), then
generation of n tokens one at a time, each after `depth` random tokens already in the cache (llama-bench's -d; their
prefill is not timed); each test warmed up once first as llama-bench does (the whole prompt, one generated token),
then the best of the repetitions."""
import os
import time

import numba
import numpy as np

from kvant.runtime.progress import step_progress


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


def host_info() -> dict:
    """What a bench table names: the CPU, the host features that choose a kernel path, and the path in force."""
    from kvant.formats import host
    features = host.host_features()
    return {"cpu": host.cpu_model(), "kernel_path": host.CPU_PATH,
            "features": sorted(f for f in features if f in host.REPORTED_FEATURES)}


def _time_prompt(model, prompt, context=()):
    model.reset()
    context = list(context)
    if context:
        model.eval(context)
    t0 = time.perf_counter()
    model.eval(context + list(prompt))        # the context is reused from the cache: only the prompt runs
    return time.perf_counter() - t0


def _time_gen(model, first, tokens, context=()):
    model.reset()
    model.eval(list(context) + [first])
    t0 = time.perf_counter()
    for token in tokens:
        model._step(token)
    return time.perf_counter() - t0


def run_bench(model, n_prompt=(128,), n_gen=64, repetitions=1, seed=0, depth=0):
    """tokens/s of prompt processing for each length in n_prompt (an int or a sequence) and of generating n_gen
    tokens, each after depth tokens of context; the GB/s generation implies from the bytes of weights kvant reads
    per token (its repacked matrices: the token embedding only where it is also the output head, since decode reads
    one row of it; the KV cache not counted)."""
    n_prompt = [int(n_prompt)] if np.isscalar(n_prompt) else [int(n) for n in n_prompt]
    rng = np.random.default_rng(seed)
    vocab = model.config.n_vocab
    context = rng.integers(0, vocab, depth).tolist()

    def tokens(n):
        return rng.integers(0, vocab, n).tolist()
    pp = {}
    with step_progress((len(n_prompt) + 1) * (repetitions + 1), "bench", "run") as advance:
        def timed(run, *args):
            seconds = run(*args)
            advance()
            return seconds
        for n in n_prompt:
            timed(_time_prompt, model, tokens(n), context)                          # warm-up
            best = min(timed(_time_prompt, model, tokens(n), context) for _ in range(repetitions))
            pp[str(n)] = n / best
        timed(_time_gen, model, 0, tokens(1), context)                              # warm-up
        best_tg = min(timed(_time_gen, model, tokens(1)[0], tokens(n_gen), context) for _ in range(repetitions))
    tg = n_gen / best_tg
    return {
        "model": os.path.basename(model.path),
        **host_info(),
        "threads": numba.get_num_threads(),
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "n_depth": depth,
        "pp_tok_s": pp,
        "tg_tok_s": tg,
        "tg_gb_s": model.transformer.weight_bytes * tg / 1e9,
        "weight_bytes": model.transformer.weight_bytes,
        "load_s": model.load_seconds,
        "rss_mb": resident_mb(),
    }
