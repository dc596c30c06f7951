"""Reference data for tests/convert/test_imatrix.py, stored small in tests/fixtures/imatrix/.

    python tests/make_imatrix_fixtures.py      # needs llama-cpp-python (libggml-base and libllama from its wheel)

What it does, per model in MODELS (tiny checkpoints of tests/fixtures/convert/hf, converted to F32 by kvant: the
same input tests/fixtures/convert/llamacpp_quantize.json's oracle quantized):
1. `qconv imatrix` (kvant's runtime) on the first TEXT_CHARS characters of ../shared/corpora/en.txt, with the
   model's options in MODELS -> <model>.imatrix.gguf and, with --output-format dat, <model>.imatrix.dat.
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
llama-imatrix itself is not built here (llama-cpp-python ships the libraries, not the tools), so there is no
llama.cpp-collected fixture: the collected values are checked against numpy in the tests instead.
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
HF = os.path.join(HERE, "fixtures", "convert", "hf")
CORPUS = os.path.join(ROOT, "..", "shared", "corpora", "en.txt")
TEXT_CHARS = 4000
# model -> qconv imatrix options (llama: untied output head, so --process-output collects output.weight;
# gemma3: tied head, and a vocab that adds BOS)
MODELS = {"llama": ["-c", "128", "--chunks", "4", "--process-output"], "gemma3": ["-c", "96", "--chunks", "5"]}
PRESETS = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
           "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0")
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


def main():
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import llamacpp_oracle as oracle
    from kvant.convert.cli import main as qconv
    from kvant.convert.pipeline import convert
    from kvant.formats.gguf_file import GGUFFile
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(HERE, "fixtures", "convert", "llamacpp_quantize.json"), encoding="utf-8") as f:
        plain = json.load(f)
    result = {"text": {"file": "../shared/corpora/en.txt", "chars": TEXT_CHARS}, "llamacpp": oracle.version(),
              "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "en.txt")
        with open(CORPUS, encoding="utf-8") as f:
            body = f.read()[:TEXT_CHARS]
        with open(text, "w", encoding="utf-8") as f:
            f.write(body)
        for name, options in MODELS.items():
            f32 = os.path.join(tmp, f"{name}-F32.gguf")
            convert(os.path.join(HF, name), f32, "F32", progress=False)
            assert file_sha(f32) == plain[name]["F32"], f"kvant's F32 {name} is not the oracle's input any more"
            base = f"{name}.imatrix"
            gguf_path, dat_path = os.path.join(OUT, base + ".gguf"), os.path.join(OUT, base + ".dat")
            # the recorded dataset is the -f argument: a plain name, so that the fixture does not hold a temp path
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                for out, extra in ((gguf_path, []), (dat_path, ["--output-format", "dat"])):
                    code = qconv(["imatrix", f32, "-f", "en.txt", "-o", out, "--force", *options, *extra])
                    assert code == 0, f"qconv imatrix failed for {name}"
            finally:
                os.chdir(cwd)
            stats, datasets, chunk_count, chunk_size = raw_stats(oracle, gguf_path)
            ours = os.path.join(tmp, "llamacpp-written.gguf")
            llamacpp_save_imatrix(oracle, ours, stats, datasets, chunk_count, chunk_size)
            with open(ours, "rb") as a, open(gguf_path, "rb") as b:
                if a.read() != b.read():
                    raise SystemExit(f"{name}: kvant's GGUF imatrix differs from what libggml's writer makes")
            entry = {"options": options, "imatrix_gguf": file_sha(gguf_path), "imatrix_dat": file_sha(dat_path),
                     "entries": sorted(stats), "chunk_count": chunk_count, "chunk_size": chunk_size,
                     "quantize": {}, "quantize_dat": {}}
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
