"""llama.cpp's embeddings of a few inputs, for tests/runtime/test_real_models.py (kvant's must agree: cosine >= 0.999).

    python bench/build_llama_bench.py llama-embedding      # builds llama.cpp's tool once (bench/.work/)
    python tests/make_embedding_fixtures.py

Runs llama-embedding on the catalog's SmolLM2 and Gemma 3 270M files (kvant's model cache) for INPUTS with each
pooling in POOLINGS, L2-normalised (--embd-normalize 2, its default), 2 threads, and writes
tests/fixtures/llamacpp/embeddings.json: per model and pooling, the vectors rounded to 6 decimals.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOOL = os.path.join(ROOT, "bench", ".work", "llama.cpp-build", "bin", "llama-embedding")
OUT = os.path.join(HERE, "fixtures", "llamacpp", "embeddings.json")
INPUTS = ["The cat sits on the mat.", "A cat is sitting on a mat.", "Квантовая механика описывает атомы.",
          "def add(a, b): return a + b"]
POOLINGS = ("mean", "last", "cls")
MODELS = ("smollm2", "gemma3-270m")


def llama_embeddings(path, pooling):
    r = subprocess.run([TOOL, "-m", path, "-p", "\n".join(INPUTS), "--pooling", pooling, "--embd-normalize", "2",
                        "--embd-output-format", "json", "-t", "2", "-c", "512"],
                       capture_output=True, text=True, check=True)
    data = json.loads(r.stdout[r.stdout.index("{"):])["data"]
    return [[round(x, 6) for x in d["embedding"]] for d in sorted(data, key=lambda d: d["index"])]


def main():
    sys.path.insert(0, ROOT)
    from kvant.runtime.model_cache import resolve_model
    out = {"inputs": INPUTS, "models": {}}
    for name in MODELS:
        path = resolve_model(name)
        out["models"][name] = {p: llama_embeddings(path, p) for p in POOLINGS}
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
