"""Reference data for tests/convert/test_imatrix.py, stored small in tests/fixtures/imatrix/.

    python tests/make_imatrix_fixtures.py      # needs llama-cpp-python (libggml-base and libllama from its wheel)

What it does, per model in MODELS (tiny checkpoints of ../shared/fixtures/hf-tiny, converted to F32 by kvant: the
same input tests/fixtures/convert/llamacpp_quantize.json's oracle quantized):
1. `qconv imatrix` (kvant's runtime) on text.txt (a deterministic word salad made by make_text(), stored), with
   the model's options in MODELS -> <model>.imatrix.gguf and, with --output-format dat, <model>.imatrix.dat.
2. llama.cpp's writer: the sums and counts of that file, read back by libggml's gguf reader, written again through
   libggml's gguf API the way llama-imatrix's save_imatrix does (gguf_init_empty, general.type, imatrix.datasets,
   imatrix.chunk_count, imatrix.chunk_size, then NAME.in_sum2 [ne0, n_mat] and NAME.counts [1, n_mat] per sorted
   name, gguf_write_to_file). The script stops if those bytes differ from kvant's file; the stored .gguf is thus
   the file llama.cpp's own writer produces from these statistics.
3. llama-quantize with the importance matrix: bench/llamacpp_oracle.py's quantize(imatrix=...) -- llama-quantize's
   loader redone over libggml's gguf reader (the loader itself lives in llama.cpp's tools, not in the library),
   the per-column weights passed to llama_model_quantize through params.imatrix and the quantize.imatrix.* keys as
   kv_overrides, as llama-quantize's main() does -- for every preset in PRESETS with the .gguf and for DAT_PRESETS
   with the .dat. The recorded imatrix file name (quantize.imatrix.file) is the fixture's base name. The sha256 of
   each output file and each tensor's name, type and sha256 go to llamacpp_quantize_imatrix.json, with the number
   of tensors that differ from llama-quantize's output without an imatrix (llamacpp_quantize.json; null where that
   preset is not there, e.g. Q2_K_S, which llama.cpp refuses without an imatrix).
4. llama.cpp's collection: llama-imatrix itself is not built here (llama-cpp-python ships the libraries, not the
   tools), so llamacpp_collect() runs its collect_imatrix logic as llama.cpp's eval callback (cb_eval) over
   compute_imatrix's chunks of the same text on the same F32 file -> <model>.llamacpp.gguf (written as
   save_imatrix writes, through libggml). The activations are llama.cpp's own; kvant's collection must have the
   same entries and counts and sums within float tolerance of these.
"""
import ctypes
import hashlib
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "fixtures", "imatrix")
HF = os.path.join(HERE, "..", "..", "shared", "fixtures", "hf-tiny")
TEXT = os.path.join(OUT, "text.txt")
# model -> (n_ctx, chunks, process_output). llama: untied output head, so --process-output collects output.weight;
# gemma3: tied head (token_embd.weight, never collected) and a vocab that adds BOS.
MODELS = {"llama": (128, 4, True), "gemma3": (96, 5, False)}
WORDS = """the of and to a in is it you that he was for on are with as I his they be at one have this from or had
by word but what some we can out other were all there when up use your how said an each she which do their time if
will way about many then them write would like so these her long make thing see him two has look more day could go
come did number sound no most people my over know water than call first who may down side been now find any new
work part take get place made live where after back little only round man year came show every good me give our
under name very through just form sentence great think say help low line differ turn cause much mean before move
right boy old too same tell does set three want air well also play small end put home read hand port large spell
add even land here must big high such follow act why ask men change went light kind off need house picture try us
again animal point mother world near build self earth father head stand own page should country found answer school
grow study still learn plant cover food sun four between state keep eye never last let thought city tree cross farm
hard start might story saw far sea draw left late run while press close night real life few north""".split()


def make_text(n_sentences=180, seed=20240611):
    """A deterministic word salad (the fixtures should not hold copyrighted text): sentences of 4-16 words."""
    import numpy as np
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_sentences):
        words = [WORDS[i] for i in rng.integers(0, len(WORDS), rng.integers(4, 17))]
        out.append(" ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!", ","]))
    return " ".join(out) + "\n"
PRESETS = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
           "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "IQ1_S", "IQ1_M", "IQ2_XXS",
           "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M")
DAT_PRESETS = ("Q4_K_M", "IQ4_XS")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def file_sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class GGMLInitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def raw_stats(oracle, path):
    """in_sum2 and counts exactly as stored (not normalised), through libggml's gguf reader."""
    import numpy as np
    lib = oracle.ggml_base()
    ctx = lib.gguf_init_from_file(path.encode(), oracle._GGUFInitParams(True, None))
    assert ctx, f"libggml cannot parse {path}"
    try:
        base = lib.gguf_get_data_offset(ctx)
        raw = np.fromfile(path, dtype=np.uint8)
        tensors = {}
        for i in range(lib.gguf_get_n_tensors(ctx)):
            off = base + lib.gguf_get_tensor_offset(ctx, i)
            tensors[lib.gguf_get_tensor_name(ctx, i).decode()] = \
                raw[off:off + lib.gguf_get_tensor_size(ctx, i)].view(np.float32).copy()
        kid = lib.gguf_find_key(ctx, b"imatrix.datasets")
        datasets = [lib.gguf_get_arr_str(ctx, kid, i).decode() for i in range(lib.gguf_get_arr_n(ctx, kid))]
        chunk_count = lib.gguf_get_val_u32(ctx, lib.gguf_find_key(ctx, b"imatrix.chunk_count"))
        chunk_size = lib.gguf_get_val_u32(ctx, lib.gguf_find_key(ctx, b"imatrix.chunk_size"))
    finally:
        lib.gguf_free(ctx)
    stats = {n[:-len(".in_sum2")]: (v, tensors[n[:-len(".in_sum2")] + ".counts"])
             for n, v in tensors.items() if n.endswith(".in_sum2")}
    return stats, datasets, chunk_count, chunk_size


def llamacpp_save_imatrix(oracle, path, stats, datasets, chunk_count, chunk_size):
    """tools/imatrix/imatrix.cpp save_imatrix, through libggml's API."""
    import numpy as np
    lib = oracle.ggml_base()
    c = ctypes
    for name, args, res in [
            ("ggml_init", [GGMLInitParams], c.c_void_p), ("ggml_free", [c.c_void_p], None),
            ("ggml_tensor_overhead", [], c.c_size_t),
            ("ggml_new_tensor_2d", [c.c_void_p, c.c_int, c.c_int64, c.c_int64], c.c_void_p),
            ("ggml_set_name", [c.c_void_p, c.c_char_p], c.c_void_p), ("ggml_get_data", [c.c_void_p], c.c_void_p),
            ("gguf_init_empty", [], c.c_void_p), ("gguf_set_val_str", [c.c_void_p, c.c_char_p, c.c_char_p], None),
            ("gguf_set_arr_str", [c.c_void_p, c.c_char_p, c.POINTER(c.c_char_p), c.c_size_t], None),
            ("gguf_set_val_u32", [c.c_void_p, c.c_char_p, c.c_uint32], None),
            ("gguf_add_tensor", [c.c_void_p, c.c_void_p], None),
            ("gguf_write_to_file", [c.c_void_p, c.c_char_p, c.c_bool], c.c_bool)]:
        f = getattr(lib, name)
        f.argtypes, f.restype = args, res
    pad = lambda n: (n + 15) // 16 * 16  # noqa: E731  GGML_PAD(x, GGML_MEM_ALIGN = 16)
    size = sum(pad(lib.ggml_tensor_overhead() + 4 * s.size) + pad(lib.ggml_tensor_overhead() + 4 * n.size)
               for s, n in stats.values())
    ctx = lib.ggml_init(GGMLInitParams(size, None, False))
    g = lib.gguf_init_empty()
    lib.gguf_set_val_str(g, b"general.type", b"imatrix")
    arr = (c.c_char_p * len(datasets))(*[d.encode() for d in datasets])
    lib.gguf_set_arr_str(g, b"imatrix.datasets", arr, len(datasets))
    lib.gguf_set_val_u32(g, b"imatrix.chunk_count", chunk_count)
    lib.gguf_set_val_u32(g, b"imatrix.chunk_size", chunk_size)
    for name in sorted(stats, key=lambda s: s.encode()):
        sums, counts = stats[name]
        nmat = counts.size
        for suffix, values, ne0 in ((".in_sum2", sums, sums.size // nmat), (".counts", counts, 1)):
            t = lib.ggml_new_tensor_2d(ctx, 0, ne0, nmat)  # GGML_TYPE_F32
            lib.ggml_set_name(t, (name + suffix).encode())
            ctypes.memmove(lib.ggml_get_data(t), np.ascontiguousarray(values, np.float32).ctypes.data, 4 * values.size)
            lib.gguf_add_tensor(g, t)
    ok = lib.gguf_write_to_file(g, path.encode(), False)
    lib.ggml_free(ctx)
    assert ok, f"gguf_write_to_file({path}) failed"


class GGMLTensor(ctypes.Structure):
    """struct ggml_tensor (ggml/include/ggml.h: GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64, GGML_MAX_SRC 10,
    GGML_MAX_NAME 64)."""
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                ("flags", ctypes.c_int32), ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p),
                ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64),
                ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]


def llamacpp_collect(oracle, model_path, text, n_ctx, n_chunks, process_output):
    """llama-imatrix's collection, run by llama.cpp itself: IMatrixCollector::collect_imatrix as the scheduler's
    eval callback (cb_eval) -- MUL_MAT nodes with >= 16 rows of F32 input whose weight is blk.* (or output.weight
    with process_output), sum of x^2 per column accumulated in float32 row by row, count += rows -- over
    compute_imatrix's chunks (text tokenized with add_special, BOS first in each chunk where the vocab adds one, all
    logits requested, memory cleared per chunk). One chunk per llama_decode (n_batch = n_ubatch = n_ctx): the
    collected rows are the same as with llama-imatrix's multi-sequence batches. Returns (sums, counts, chunk_count)."""
    import numpy as np
    llama_cpp = oracle._llama_cpp()
    lib = oracle.ggml_base()
    lib.ggml_op_name.argtypes, lib.ggml_op_name.restype = [ctypes.c_int], ctypes.c_char_p
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(model_path.encode(), llama_cpp.llama_model_default_params())
    vocab = llama_cpp.llama_model_get_vocab(model)
    data = text.encode("utf-8")
    buf = (llama_cpp.llama_token * (len(data) + 8))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, len(buf), True, False)
    assert n > 0
    tokens = list(buf[:n])
    add_bos = llama_cpp.llama_vocab_get_add_bos(vocab)
    bos = llama_cpp.llama_vocab_bos(vocab)
    assert len(tokens) >= 2 * n_ctx
    n_chunks = min(n_chunks, len(tokens) // n_ctx)
    sums, counts = {}, {}

    def wname(t):
        name = t.name.decode()
        if "#" in name:
            name = name.split("#")[1]
        return name

    def callback(t_ptr, ask, _user):
        t = GGMLTensor.from_address(t_ptr)
        op = lib.ggml_op_name(t.op).decode()
        if op == "MUL_MAT_ID":
            return True
        if op != "MUL_MAT":
            return False
        src0, src1 = GGMLTensor.from_address(t.src[0]), GGMLTensor.from_address(t.src[1])
        name = wname(src0)
        if ask:
            if src1.ne[1] < 16 or src1.type != 0:
                return False
            return name.startswith("blk.") or (process_output and name == "output.weight")
        assert src1.nb[0] == 4 and src0.ne[2] * src0.ne[3] == 1
        acc = sums.setdefault(name, np.zeros(src1.ne[0], np.float32))
        for i3 in range(src1.ne[3]):
            for i2 in range(src1.ne[2]):
                for row in range(src1.ne[1]):
                    addr = src1.data + row * src1.nb[1] + i2 * src1.nb[2] + i3 * src1.nb[3]
                    x = np.ctypeslib.as_array((ctypes.c_float * src1.ne[0]).from_address(addr))
                    acc += x * x
        counts[name] = counts.get(name, 0) + src1.ne[1] * src1.ne[2] * src1.ne[3]
        return True

    cb = llama_cpp.ggml_backend_sched_eval_callback(callback)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = n_ctx
    cparams.n_seq_max = 1
    cparams.n_threads = cparams.n_threads_batch = 2
    cparams.cb_eval = cb
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
    try:
        for c in range(n_chunks):
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            chunk = tokens[c * n_ctx:(c + 1) * n_ctx]
            if add_bos:
                chunk[0] = bos
            for k, tok in enumerate(chunk):
                batch.token[k] = tok
                batch.pos[k] = k
                batch.n_seq_id[k] = 1
                batch.seq_id[k][0] = 0
                batch.logits[k] = True
            batch.n_tokens = n_ctx
            assert llama_cpp.llama_decode(ctx, batch) == 0
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    chunk_count = max(counts.values()) // n_ctx
    return ({k: v[None, :] for k, v in sums.items()}, {k: np.array([v], np.float32) for k, v in counts.items()},
            chunk_count)


def options(n_ctx, n_chunks, process_output):
    return ["-c", str(n_ctx), "--chunks", str(n_chunks)] + (["--process-output"] if process_output else [])


def main():
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import numpy as np
    import llamacpp_oracle as oracle
    from kvant.convert.cli import main as qconv
    from kvant.convert.pipeline import convert
    from kvant.formats.gguf_file import GGUFFile
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(HERE, "fixtures", "convert", "llamacpp_quantize.json"), encoding="utf-8") as f:
        plain = json.load(f)
    text_body = make_text()
    with open(TEXT, "w", encoding="utf-8") as f:
        f.write(text_body)
    result = {"text": "text.txt", "llamacpp": oracle.version(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "text.txt"), "w", encoding="utf-8") as f:
            f.write(text_body)
        for name, (n_ctx, n_chunks, process_output) in MODELS.items():
            f32 = os.path.join(tmp, f"{name}-F32.gguf")
            convert(os.path.join(HF, name), f32, "F32", progress=False)
            assert file_sha(f32) == plain[name]["F32"], f"kvant's F32 {name} is not the oracle's input any more"
            base = f"{name}.imatrix"
            gguf_path, dat_path = os.path.join(OUT, base + ".gguf"), os.path.join(OUT, base + ".dat")
            opts = options(n_ctx, n_chunks, process_output)
            # the recorded dataset is the -f argument: a plain name, so that the fixture does not hold a temp path
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                for out, extra in ((gguf_path, []), (dat_path, ["--output-format", "dat"])):
                    code = qconv(["imatrix", f32, "-f", "text.txt", "-o", out, "--force", *opts, *extra])
                    assert code == 0, f"qconv imatrix failed for {name}"
            finally:
                os.chdir(cwd)
            stats, datasets, chunk_count, chunk_size = raw_stats(oracle, gguf_path)
            again = os.path.join(tmp, "llamacpp-written.gguf")
            llamacpp_save_imatrix(oracle, again, stats, datasets, chunk_count, chunk_size)
            with open(again, "rb") as a, open(gguf_path, "rb") as b:
                if a.read() != b.read():
                    raise SystemExit(f"{name}: kvant's GGUF imatrix differs from what libggml's writer makes")
            # llama.cpp's own collection on the same text, written as llama-imatrix writes it
            sums, counts, cc = llamacpp_collect(oracle, f32, text_body[:-1], n_ctx, n_chunks, process_output)
            llamacpp_save_imatrix(oracle, os.path.join(OUT, f"{name}.llamacpp.gguf"),
                                  {k: (sums[k], counts[k]) for k in sums}, ["text.txt"], cc, n_ctx)
            worst = max(float(np.max(np.abs(sums[k] - stats[k][0]) / np.abs(stats[k][0]))) for k in sums)
            entry = {"options": opts, "imatrix_gguf": file_sha(gguf_path), "imatrix_dat": file_sha(dat_path),
                     "entries": sorted(stats), "chunk_count": chunk_count, "chunk_size": chunk_size,
                     "llamacpp_collected": {"entries": sorted(sums), "chunk_count": cc,
                                            "counts": {k: int(v[0]) for k, v in sorted(counts.items())},
                                            "max_rel_diff_vs_kvant": worst},
                     "quantize": {}, "quantize_dat": {}}
            print(name, "llama.cpp's collection vs kvant's: max relative difference", worst, flush=True)
            for kind, path, presets in (("quantize", gguf_path, PRESETS), ("quantize_dat", dat_path, DAT_PRESETS)):
                for preset in presets:
                    out = os.path.join(tmp, f"{name}-{preset}.gguf")
                    oracle.quantize(f32, out, preset, imatrix=path, imatrix_arg=os.path.basename(path))
                    with GGUFFile(out) as g:
                        tensors = [[n, t.ggml_type.name, sha(g.raw(n).tobytes())] for n, t in g.tensors.items()]
                    without = {t[0]: t[2] for t in plain[name].get(preset, {}).get("tensors", [])}
                    entry[kind][preset] = {"sha256": file_sha(out), "tensors": tensors,
                                           "tensors_changed_by_imatrix": None if not without else
                                           sum(without.get(t[0]) != t[2] for t in tensors)}
                    os.unlink(out)
                    print(name, kind, preset, "ok", flush=True)
            result["models"][name] = entry
    with open(os.path.join(OUT, "llamacpp_quantize_imatrix.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()
