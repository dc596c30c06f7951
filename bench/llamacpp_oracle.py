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


def quantize(src, dst, type_name, allow_requantize=True, imatrix=None, n_threads=2, imatrix_arg=None):
    """llama-quantize: src GGUF -> dst GGUF of llama_ftype type_name (e.g. "Q4_K_M", "F32").

    imatrix: an importance-matrix file (GGUF or legacy .dat), used as `llama-quantize --imatrix FILE` uses it. The
    file loader of llama-quantize (common/imatrix-loader.cpp, tools/quantize/quantize.cpp) is not in the library, so
    load_imatrix() below does what it does (GGUF parsed by libggml's own gguf reader) and the per-column weights go
    to llama_model_quantize through params.imatrix, with the quantize.imatrix.* keys as kv_overrides, exactly as
    llama-quantize's main() passes them. imatrix_arg: the file name recorded in quantize.imatrix.file (default:
    imatrix as given)."""
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{type_name}", None) or getattr(
        llama_cpp, f"LLAMA_FTYPE_ALL_{type_name}")
    params.allow_requantize = allow_requantize
    params.nthread = n_threads
    keep = []  # ctypes buffers that must outlive the call
    if imatrix is not None:
        data, datasets, chunk_count = load_imatrix(imatrix)
        entries = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
        for i, (name, values) in enumerate(data.items()):
            arr = np.ascontiguousarray(values, dtype=np.float32)
            keep.append(arr)
            entries[i].name = name.encode()
            entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = arr.size
        entries[len(data)].name = None  # terminator
        params.imatrix = entries
        overrides = [("quantize.imatrix.file", "str", (imatrix_arg or imatrix).encode()[:127])]
        if datasets:
            overrides.append(("quantize.imatrix.dataset", "str", datasets[0].encode()[:127]))
        overrides.append(("quantize.imatrix.entries_count", "int", len(data)))
        if chunk_count > 0:
            overrides.append(("quantize.imatrix.chunks_count", "int", chunk_count))
        kvo = (llama_cpp.llama_model_kv_override * (len(overrides) + 1))()
        for i, (key, kind, value) in enumerate(overrides):
            kvo[i].key = key.encode()
            if kind == "str":
                kvo[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
                kvo[i].value.val_str = value
            else:
                kvo[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
                kvo[i].value.val_i64 = value
        kvo[len(overrides)].key = b""  # terminator: key[0] == 0
        params.kv_overrides = kvo
        keep += [entries, kvo]
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {type_name}) failed with {rc}")
    return dst


# -- importance matrices as llama-quantize loads them ------------------------------------------------------------
class _GGUFInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


_GGML = None
GGUF_TYPE_UINT32, GGUF_TYPE_STRING, GGUF_TYPE_ARRAY = 4, 8, 9
GGML_TYPE_F32 = 0


def ggml_base():
    """libggml-base from llama-cpp-python, with the gguf reader's functions typed."""
    global _GGML
    if _GGML is None:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(_llama_cpp().__file__), "lib", "libggml-base.so"))
        c = ctypes
        sigs = {
            "gguf_init_from_file": ([c.c_char_p, _GGUFInitParams], c.c_void_p),
            "gguf_free": ([c.c_void_p], None),
            "gguf_find_key": ([c.c_void_p, c.c_char_p], c.c_int64),
            "gguf_get_kv_type": ([c.c_void_p, c.c_int64], c.c_int),
            "gguf_get_arr_type": ([c.c_void_p, c.c_int64], c.c_int),
            "gguf_get_arr_n": ([c.c_void_p, c.c_int64], c.c_size_t),
            "gguf_get_arr_str": ([c.c_void_p, c.c_int64, c.c_size_t], c.c_char_p),
            "gguf_get_val_u32": ([c.c_void_p, c.c_int64], c.c_uint32),
            "gguf_get_n_tensors": ([c.c_void_p], c.c_int64),
            "gguf_get_tensor_name": ([c.c_void_p, c.c_int64], c.c_char_p),
            "gguf_get_tensor_type": ([c.c_void_p, c.c_int64], c.c_int),
            "gguf_get_tensor_offset": ([c.c_void_p, c.c_int64], c.c_size_t),
            "gguf_get_tensor_size": ([c.c_void_p, c.c_int64], c.c_size_t),
            "gguf_get_data_offset": ([c.c_void_p], c.c_size_t),
        }
        for name, (args, res) in sigs.items():
            f = getattr(lib, name)
            f.argtypes, f.restype = args, res
        _GGML = lib
    return _GGML


def _load_imatrix_gguf(path):
    """common_imatrix_load's GGUF branch, through libggml's gguf reader. None if libggml cannot parse the file
    (llama.cpp then tries the legacy format)."""
    lib = ggml_base()
    ctx = lib.gguf_init_from_file(path.encode(), _GGUFInitParams(True, None))
    if not ctx:
        return None
    try:
        n = lib.gguf_get_n_tensors(ctx)
        if n < 1:
            raise ValueError(f"no data in file {path}")
        keys = {k: lib.gguf_find_key(ctx, k.encode()) for k in
                ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")}
        datasets = []
        kid = keys["imatrix.datasets"]
        if kid != -1 and lib.gguf_get_kv_type(ctx, kid) == GGUF_TYPE_ARRAY and \
                lib.gguf_get_arr_type(ctx, kid) == GGUF_TYPE_STRING:
            datasets = [lib.gguf_get_arr_str(ctx, kid, i).decode() for i in range(lib.gguf_get_arr_n(ctx, kid))]
        if any(v == -1 for v in keys.values()):  # llama-quantize: "missing imatrix metadata"
            raise ValueError(f"missing imatrix metadata in file {path}")
        for k in ("imatrix.chunk_count", "imatrix.chunk_size"):
            if lib.gguf_get_kv_type(ctx, keys[k]) != GGUF_TYPE_UINT32:  # gguf_get_val_u32 would abort
                raise ValueError(f"{k} is not a u32 in {path}: llama.cpp would abort")
        chunk_count = lib.gguf_get_val_u32(ctx, keys["imatrix.chunk_count"])
        base = lib.gguf_get_data_offset(ctx)
        raw = np.fromfile(path, dtype=np.uint8)
        found = {}
        for i in range(n):
            name = lib.gguf_get_tensor_name(ctx, i).decode()
            for suffix, slot in ((".in_sum2", 0), (".counts", 1)):
                if name.endswith(suffix) and len(name) > len(suffix):
                    if lib.gguf_get_tensor_type(ctx, i) != GGML_TYPE_F32:
                        raise ValueError(f"sums and counts for {name} must be F32")
                    off = base + lib.gguf_get_tensor_offset(ctx, i)
                    vals = raw[off:off + lib.gguf_get_tensor_size(ctx, i)].view(np.float32).copy()
                    found.setdefault(name[:-len(suffix)], [None, None])[slot] = vals
        data = {}
        for name, (sums, counts) in found.items():
            if sums is None or counts is None:
                raise ValueError(f"mismatched sums and counts for {name}")
            counts = np.floor(counts.astype(np.float64) + 0.5).astype(np.int64)  # std::lround
            ne0 = sums.size // counts.size
            e = np.empty(sums.size, np.float32)
            for j, cnt in enumerate(counts):
                cnt = np.float32(cnt)
                e[j * ne0:(j + 1) * ne0] = sums[j * ne0:(j + 1) * ne0] / cnt if cnt > 0 else np.float32(1)
            data[name] = e
        return data, datasets, int(chunk_count)
    finally:
        lib.gguf_free(ctx)


def _load_imatrix_legacy(path):
    """common_imatrix_load_legacy, then llama-quantize's normalisation (sum / ncall in float)."""
    import struct
    buf = open(path, "rb").read()
    pos = 0

    def read(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v[0]

    n_entries = read("<i")
    if n_entries < 1:
        raise ValueError(f"no data in file {path}")
    data = {}
    for _ in range(n_entries):
        n = read("<i")
        name = buf[pos:pos + n].split(b"\0", 1)[0].decode()
        pos += n
        ncall, nval = read("<i"), read("<i")
        if nval < 1:
            raise ValueError(f"failed reading number of values for {name}")
        sums = np.frombuffer(buf, np.float32, nval, pos).copy()
        pos += 4 * nval
        data[name] = sums / np.float32(ncall) if ncall > 0 else sums
    chunk_count, datasets = 0, []
    if pos < len(buf):
        chunk_count = read("<i")
        if pos + 4 <= len(buf):
            n = read("<i")
            if n > 0:
                datasets.append(buf[pos:pos + n].split(b"\0", 1)[0].decode())
    return data, datasets, chunk_count


def load_imatrix(path):
    """(per-column weights by tensor name, datasets, chunk count) as llama-quantize's load_imatrix makes them."""
    got = _load_imatrix_gguf(path)
    return got if got is not None else _load_imatrix_legacy(path)


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
