"""Reference outputs of llama.cpp for the real-model test tier, stored small in tests/fixtures/llamacpp/.

Regenerate (needs llama-cpp-python, which builds llama.cpp from source: `pip install llama-cpp-python`):
    python tests/make_llamacpp_fixtures.py [smollm2 gemma3-270m]
    python tests/make_llamacpp_fixtures.py --perplexity-for-this-cpu [smollm2 gemma3-270m]
The second adds only the perplexities of the llama.cpp built on this machine (natively: its best instruction set)
under perplexity_by_path[kvant's kernel path for this CPU], beside the others: llama.cpp's x86 builds differ from
each other in the last digits as kvant's paths do, so the test compares each kvant path with the llama.cpp of the
same instruction set ("perplexity" is that of the AVX-512 VNNI build, where the rest was made).
The models are the known small models of kvant's model cache (fetched from their PyPI packages). For each:
perplexity on ../shared/corpora/{en,ru}.txt (c=512, 8 chunks, llama-perplexity's method), the greedy continuation
of a fixed prompt, and per-position argmax / top-5 logits of a 64-token prompt.
"""
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import llamacpp_oracle as oracle  # noqa: E402

from kvant.runtime.model_cache import resolve_model  # noqa: E402

CORPORA = os.path.join(HERE, "..", "..", "shared", "corpora")
OUT = os.path.join(HERE, "fixtures", "llamacpp")
GREEDY_PROMPT = "The capital of France is"
LOGITS_PROMPT = ("The quick brown fox jumps over the lazy dog. Книга - это зеркало, в котором отражается душа. "
                 "In 1492, Columbus sailed the ocean blue; 3 + 4 = 7.")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def perplexities(llm, n_chunks=8):
    out = {}
    for lang in ("en", "ru"):
        with open(os.path.join(CORPORA, f"{lang}.txt"), encoding="utf-8") as f:
            text = f.read()
        out[lang] = {"n_ctx": 512, "n_chunks": n_chunks, "ppl": oracle.perplexity(llm, text, 512, n_chunks)}
    return out


def reference(path, n_chunks=8):
    import numpy as np
    llm = oracle.load(path, n_ctx=512)
    result = {"file_sha256": sha256(path), "perplexity": perplexities(llm, n_chunks)}
    ids, margins = oracle.greedy_steps(llm, oracle.tokenize(llm, GREEDY_PROMPT, add_bos=oracle.adds_bos(llm)), 16)
    result["greedy"] = {"prompt": GREEDY_PROMPT, "n_predict": 16, "text": oracle.greedy(llm, GREEDY_PROMPT, 16),
                        "ids": ids, "margins": [round(m, 4) for m in margins]}
    tokens = oracle.tokenize(llm, LOGITS_PROMPT, add_bos=True)[:64]
    logits = oracle.logits(llm, tokens)
    top = np.argsort(-logits, axis=1)[:, :5]
    result["prompt_logits"] = {
        "text": LOGITS_PROMPT, "tokens": [int(t) for t in tokens],
        "argmax": [int(i) for i in logits.argmax(axis=1)],
        "top5_ids": top.tolist(),
        "top5_logits": np.take_along_axis(logits, top, axis=1).round(4).tolist(),
        "range": [float(r) for r in (logits.max(axis=1) - logits.min(axis=1))],
    }
    return result


def perplexity_for_this_cpu(names):
    from kvant.formats import host
    path_name = host.runnable_paths()[0]
    for name in names:
        out = os.path.join(OUT, f"{name}.json")
        with open(out, encoding="utf-8") as f:
            data = json.load(f)
        model = resolve_model(name)
        assert sha256(model) == data["file_sha256"], f"{name}: not the file the fixture was made from"
        data.setdefault("perplexity_by_path", {})[path_name] = perplexities(oracle.load(model, n_ctx=512))
        data["perplexity_by_path"][path_name]["cpu"] = host.cpu_model()
        with open(out, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
        print(name, path_name, json.dumps(data["perplexity_by_path"][path_name]))


def main(names):
    os.makedirs(OUT, exist_ok=True)
    for name in names:
        data = {"model": name, **reference(resolve_model(name))}
        with open(os.path.join(OUT, f"{name}.json"), "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
        print(name, json.dumps(data["perplexity"]), repr(data["greedy"]["text"]))


if __name__ == "__main__":
    args = sys.argv[1:]
    this_cpu = "--perplexity-for-this-cpu" in args
    names = [a for a in args if not a.startswith("--")] or ["smollm2", "gemma3-270m"]
    perplexity_for_this_cpu(names) if this_cpu else main(names)
