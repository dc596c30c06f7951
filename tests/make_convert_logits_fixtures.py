"""llama.cpp's logits on kvant-converted files: tests/fixtures/convert/llamacpp_logits.npz.

For each fixture in ../shared/fixtures/hf-tiny/{llama,mistral,qwen2,qwen3,gemma3,bitnet} and each output type
(F32, F16, BF16, Q8_0, Q4_K_M, plus TQ2_0 for bitnet), converts with kvant, loads the output in llama.cpp
(through bench/llamacpp_oracle.py, i.e. llama-cpp-python) and evaluates the fixture's ref_tokens.npy from an empty
cache. Stores per (fixture, type), under the key "<fixture>-<type>":
  <key>.sha256   sha256 of kvant's file (hex string): the test checks it re-converts to the same bytes
  <key>.logits   llama.cpp's logits (n_tokens, n_vocab) as float16
  <key>.error    present instead of .logits when llama.cpp refused the file (the error message)
and "llamacpp_version".

Used by tests/convert/test_convert_llamacpp_logits.py (CI has no llama.cpp). Regenerate, from the repo root,
whenever the converter's output bytes or the fixtures change:

    pip install llama-cpp-python      # builds llama.cpp from source
    python tests/make_convert_logits_fixtures.py
"""
import hashlib
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HF = os.path.join(HERE, "..", "..", "shared", "fixtures", "hf-tiny")
OUT = os.path.join(HERE, "fixtures", "convert", "llamacpp_logits.npz")
MODELS = ("llama", "mistral", "qwen2", "qwen3", "gemma3", "bitnet")
TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_K_M")


def types_for(name):
    return TYPES + (("TQ2_0",) if name == "bitnet" else ())


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main():
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import llamacpp_oracle as o
    from kvant.convert.pipeline import convert

    store = {"llamacpp_version": np.array(o.version())}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            tokens = [int(t) for t in np.load(os.path.join(HF, name, "ref_tokens.npy"))]
            for t in types_for(name):
                key = f"{name}-{t}"
                path = os.path.join(tmp, f"{key}.gguf")
                convert(os.path.join(HF, name), path, t, progress=False)
                store[f"{key}.sha256"] = np.array(sha256(path))
                try:
                    llm = o.load(path, n_ctx=max(64, len(tokens)))
                    try:
                        x = o.logits(llm, tokens)
                    finally:
                        llm.close()
                    store[f"{key}.logits"] = x.astype(np.float16)
                    print(f"{key}: {x.shape}", flush=True)
                except Exception as e:  # llama.cpp refused the file
                    store[f"{key}.error"] = np.array(f"{type(e).__name__}: {e}")
                    print(f"{key}: llama.cpp refused: {e}", flush=True)
                os.remove(path)
    np.savez_compressed(OUT, **store)
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
