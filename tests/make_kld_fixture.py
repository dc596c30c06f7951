"""Regenerate tests/fixtures/llamacpp/kld-base-smollm2.* : a KL-divergence base file written by llama-perplexity
(one chunk of 16 tokens of the start of ../shared/corpora/en.txt, on the real-model tier's SmolLM2 file) and what
llama-perplexity printed for it. Needs llama.cpp's tools (python bench/build_llama_bench.py llama-perplexity):
    python tests/make_kld_fixture.py
"""
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOOL = os.path.join(ROOT, "bench", ".work", "llama.cpp-build", "bin", "llama-perplexity")
OUT = os.path.join(HERE, "fixtures", "llamacpp", "kld-base-smollm2")
TEXT_CHARS, N_CTX = 3000, 16


def main():
    sys.path.insert(0, HERE)
    from make_convert_logits_fixtures import sha256
    from shared_files import CORPORA
    from kvant.runtime.model_cache import resolve_model
    model = resolve_model("smollm2")
    with open(os.path.join(CORPORA, "en.txt"), encoding="utf-8") as f:
        text = f.read()[:TEXT_CHARS]
    with tempfile.TemporaryDirectory() as tmp:
        text_path, base = os.path.join(tmp, "t.txt"), os.path.join(tmp, "base.bin")
        with open(text_path, "w", encoding="utf-8") as f:
            f.write(text)
        r = subprocess.run([TOOL, "-m", model, "-f", text_path, "-c", str(N_CTX), "-b", str(N_CTX), "--chunks", "1",
                            "-t", "2", "--kl-divergence-base", base], capture_output=True, text=True, check=True)
        with open(base, "rb") as f, gzip.open(OUT + ".bin.gz", "wb", compresslevel=9) as g:
            g.write(f.read())
    ppl = float(re.search(r"\[1\]([0-9.]+)", r.stdout + r.stderr).group(1))
    with open(OUT + ".json", "w") as f:
        json.dump({"text_chars": TEXT_CHARS, "n_ctx": N_CTX, "chunk_ppl": ppl,
                   "model_sha256": sha256(model)}, f, indent=1)


if __name__ == "__main__":
    main()
