"""llama.cpp as the oracle, through llama-cpp-python: quantize, tokenize, logits, perplexity, greedy text.

Needs `pip install llama-cpp-python` (builds llama.cpp from source: several minutes on 2 cores). Used by the
bench/ scripts and by tests/make_llamacpp_fixtures.py; never imported by kvant itself or by the tests.
"""
import ctypes
import math
import os

import numpy as np


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise SystemExit("this script needs llama-cpp-python: pip install llama-cpp-python") from e
    return llama_cpp


def version():
    return _llama_cpp().__version__


def quantize(src, dst, type_name, allow_requantize=True, imatrix=None, n_threads=2):
    """llama-quantize: src GGUF -> dst GGUF of llama_ftype type_name (e.g. "Q4_K_M", "F32")."""
    llama_cpp = _llama_cpp()
    if imatrix is not None:
        raise NotImplementedError("imatrix quantization through the binding is not wired yet")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name}", None) or getattr(
        llama_cpp, f"LLAMA_FTYPE_ALL_{type_name}")
    params.allow_requantize = allow_requantize
    params.nthread = n_threads
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {type_name}) failed with {rc}")
    return dst


def load(path, n_ctx=512, n_threads=2, logits_all=True, vocab_only=False):
    llama_cpp = _llama_cpp()
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=n_threads,
                           n_threads_batch=n_threads, logits_all=logits_all, vocab_only=vocab_only, verbose=False)


def adds_bos(llm):
    """Whether the model's vocab puts BOS first (tokenizer.ggml.add_bos_token, or llama.cpp's default)."""
    llama_cpp = _llama_cpp()
    return bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model)))


def tokenize(llm, text, add_bos=False, special=False):
    return llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)


def logits(llm, tokens):
    """Logits of every position (n, n_vocab) for tokens evaluated from an empty cache."""
    llm.reset()
    llm.eval(list(tokens))
    return np.array(llm.scores[:len(tokens)], dtype=np.float32)


def perplexity(llm, text, n_ctx=512, n_chunks=8):
    """llama-perplexity's method (see tools/perplexity): chunks of n_ctx tokens, BOS first where the vocab adds
    one, NLL over the second half of each chunk."""
    add_bos = adds_bos(llm)
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    n = min(n_chunks, len(tokens) // n_ctx)
    first = n_ctx // 2
    nll, count = 0.0, 0
    for c in range(n):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            chunk[0] = llm.token_bos()
        x = logits(llm, chunk)[first:n_ctx - 1].astype(np.float64)
        targets = np.asarray(chunk[first + 1:])
        m = x.max(axis=1)
        lse = np.log(np.exp(x - m[:, None]).sum(axis=1)) + m
        nll += float(np.sum(lse - x[np.arange(len(targets)), targets]))
        count += len(targets)
    return math.exp(nll / count)


def greedy(llm, prompt, n_tokens, add_bos=None):
    """Greedy continuation of prompt as text (llama.cpp's own sampling at temperature 0)."""
    out = llm.create_completion(prompt, max_tokens=n_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0)
    return out["choices"][0]["text"]


def greedy_steps(llm, prompt_tokens, n_tokens):
    """Greedy token ids after prompt_tokens and, per step, the margin between the best and second-best logit
    (a small margin is a near tie that any rounding difference may flip)."""
    llm.reset()
    llm.eval(list(prompt_tokens))
    ids, margins = [], []
    for _ in range(n_tokens):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top2 = np.sort(logits)[-2:]
        token = int(np.argmax(logits))
        ids.append(token)
        margins.append(float(top2[1] - top2[0]))
        if token == llm.token_eos():
            break
        llm.eval([token])
    return ids, margins


def file_size_mb(path):
    return os.path.getsize(path) / 1e6
