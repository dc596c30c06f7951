"""A first run's compiles, two at a time: the prompt path in a helper process while this one compiles the decode step.

numba compiles one function at a time per process (its compiler lock), and a first chat on a new machine needs two
large sets of kernels: the decode step (one fused function per layer kind, `decode._layer`, ~13 s on an AVX2 Zen 3)
and the prompt path (the prefill GEMMs, block attention, the output head and the sampler, ~23 s). In one process
they come one after the other, the second after the user has typed the first question. Here a helper process loads
the same file, runs a few prompt tokens through it and so writes the prompt path into numba's on-disk cache, on the
other core, while this process compiles the decode step; the first prompt then loads those kernels from the cache.
The same functions compile to the same machine code wherever they compile: only who compiles them changes.

The helper runs only when the cache does not yet hold this kind of model's prompt path (a marker per set of tensor
types, architecture and KV type, beside numba's cache) and the machine has memory for a second copy of the weights.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import numba

from kvant.formats import host
from kvant.runtime import compile_notice

WAIT_SECONDS = 300          # the longest a first prompt waits for the helper before it compiles for itself
PROMPT_TOKENS = 8           # tokens of the helper's prompt: at least kernels.SMALL_BATCH, so the GEMMs run


def _marker(gguf, cfg, kv_type) -> str:
    """The file that says this kind of model's prompt path is in numba's cache: the set of (tensor role, type)
    pairs (block numbers left out), the architecture and the KV type decide which kernels it compiles."""
    roles = sorted({(re.sub(r"^blk\.\d+\.", "blk.", name), str(info.ggml_type))
                    for name, info in gguf.tensors.items()})
    key = json.dumps([cfg.arch, kv_type, roles, numba.__version__])     # numba refuses another version's cache
    return os.path.join(host.CACHE_DIR, "prompt-path", hashlib.sha1(key.encode()).hexdigest())


class PromptPathHelper:
    """The helper process of one model: started by start(), waited for by wait() before the first prompt."""

    def __init__(self, process):
        self.process = process
        self.started = time.perf_counter()

    @classmethod
    def start(cls, path, gguf, cfg, kv_type, weight_bytes):
        """A helper compiling the prompt path of the model at path, or None where there is nothing to gain (the
        cache has it, numba's cache is off or not writable) or no room for the helper's copy of the weights."""
        from kvant.runtime.model import _available_memory
        marker = _marker(gguf, cfg, kv_type)
        if os.path.exists(marker) or os.environ.get("NUMBA_DISABLE_CACHE") not in (None, "", "0"):
            return None
        free = _available_memory()
        if free is None or weight_bytes * 2 > free:       # unknown (no /proc/meminfo) counts as short
            return None
        env = {**os.environ, "KVANT_CPU_PATH": host.CPU_PATH, "NUMBA_NUM_THREADS": "1"}
        try:        # only a head start: where it cannot begin, this process compiles everything as before
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            process = subprocess.Popen([sys.executable, "-m", "kvant.runtime.compile_ahead", path, kv_type, marker],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, env=env)
        except OSError:
            return None
        compile_notice.say("kvant: compiling the prompt path in a helper process meanwhile")
        return cls(process)

    def wait(self):
        """Until the helper has ended (it is killed after WAIT_SECONDS: this process then compiles what is left)."""
        if self.process.poll() is None:
            compile_notice.say(f"kvant: waiting for the helper's compile ({time.perf_counter() - self.started:.0f}"
                               f" s in)")
        try:
            self.process.wait(WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def compile_prompt_path(path, kv_type):
    """What the helper does: the prompt path's kernels for this file, compiled by running them once (with numba's
    cache on, they stay there): a batch of PROMPT_TOKENS (GEMMs, block attention), a batch below SMALL_BATCH (the
    row kernels), the output head, and sampling, greedy and not."""
    import numpy as np
    from kvant.formats.gguf_file import open_gguf
    from kvant.runtime.config import Config
    from kvant.runtime.model import KVCache, Transformer
    from kvant.runtime.sampling import Sampler, SamplerSettings
    gguf = open_gguf(path)
    cfg = Config.from_metadata(gguf.metadata)
    transformer = Transformer(gguf, cfg)
    cache = KVCache(cfg, 2 * PROMPT_TOKENS, kv_type)
    tokens = [t % cfg.n_vocab for t in range(1, PROMPT_TOKENS + 1)]
    transformer.forward(tokens, 0, cache)
    logits = transformer.forward(tokens[:2], PROMPT_TOKENS, cache)[-1]
    for settings in (SamplerSettings(), SamplerSettings(temperature=0)):
        Sampler(settings)(logits.copy())


if __name__ == "__main__":
    model_path, kv, marker_path = sys.argv[1:]
    compile_prompt_path(model_path, kv)
    with open(marker_path, "w"):
        pass
