"""Reference data for tests/convert, stored small in tests/fixtures/convert/. Each part says what it needs.

    python tests/make_convert_fixtures.py hf        # needs torch + transformers: pip install torch==2.13.0 transformers
    python tests/make_convert_fixtures.py presets   # needs llama-cpp-python and the real models (see below)
    python tests/make_convert_fixtures.py quantize  # needs llama-cpp-python and ../shared/fixtures/hf-tiny

hf: runs llama.cpp's own convert_hf_to_gguf.py (from the llama-cpp-python sdist, $LLAMA_CPP_DIR) on each of the six
tiny checkpoints of ../shared/fixtures/hf-tiny (the tests read them there; no copy is kept in the repository) with
every --outtype it offers (f32, f16, bf16, q8_0, tq1_0, tq2_0). What llama.cpp writes -- every metadata key with its GGUF type and
value (long arrays as a count and a sha256) and every tensor's name, shape, type and a sha256 of its bytes -- goes to
llamacpp_convert.json.
llama.cpp's converter cannot convert these fixtures unaided, and the run patches exactly three things, recorded in
the JSON as "patches":
  - the fixtures' tiny BPE tokenizers have no known pre-tokenizer hash: get_vocab_base_pre falls back to the name
    kvant derives from the tokenizer.json structure (kvant.convert.pretokenizers.pre_from_structure);
  - BitnetModel.set_vocab insists on tokenizer.model; the bitnet fixture has a byte-level BPE tokenizer.json, so
    the run uses the converter's own GPT-2 vocab path (_set_vocab_gpt2);
  - llama.cpp's tensor map knows BitNet's sub-norms only by 1bitLLM's names (self_attn.inner_attn_ln,
    mlp.ffn_layernorm); transformers' BitNet calls them self_attn.attn_sub_norm and mlp.ffn_sub_norm.

quantize: llama-quantize (bench/llamacpp_oracle.py's quantize(), i.e. llama_model_quantize) applied to kvant's
own F32 conversion of each fixture, for the presets in QUANT_PRESETS: the sha256 of the whole output file and the
name, type and sha256 of every tensor, into llamacpp_quantize.json. (kvant's F32 conversion is byte-identical with
llama.cpp's converter's for four fixtures; for gemma3 and bitnet it differs as convert/README.md explains, so the
input is kvant's file for all of them.) Loading the file is also llama.cpp's check that it accepts kvant's output.

presets: the per-tensor types llama-quantize chooses for every preset, on SmolLM2-135M (F32 GGUF at
$KVANT_SMOLLM2_F32, default /work/models/smollm2/SmolLM2-F32.gguf; its llama.cpp-quantized siblings
SmolLM2-<PRESET>.gguf are used where present) and gemma-3-270m ($KVANT_GEMMA3_F32, default
/work/models/gemma3-F32.gguf: `qconv quantize --allow-requantize gemma3-270m.gguf gemma3-F32.gguf F32` of the
Q4_K_M file, the only weights there are), quantized with bench/llamacpp_oracle.py's quantize(); the presets of
IMATRIX_PRESETS also with an importance matrix ($KVANT_SMOLLM2_IMATRIX, default /work/models/SmolLM2.imatrix.gguf;
$KVANT_GEMMA3_IMATRIX, default /work/models/gemma3-270m.imatrix.gguf; llama-imatrix -c 512 --chunks 16 on
../shared/corpora text), stored as "PRESET+imatrix". Written to preset_types.json: per model, the tensor list (name,
shape, type), the model facts the rules read, and per preset the chosen types.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "fixtures", "convert")
HF_TINY = os.path.join(ROOT, "..", "shared", "fixtures", "hf-tiny")
LLAMA_CPP = os.environ.get("LLAMA_CPP_DIR", "/work/dl/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp")
FIXTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma3", "bitnet")
OUTTYPES = ("f32", "f16", "bf16", "q8_0", "tq1_0", "tq2_0")
QUANT_PRESETS = ("F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
                 "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0")
PRESETS = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L",
           "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "IQ3_S", "IQ3_M")
# Presets llama-quantize makes only with an importance matrix; with one, IQ4_XS and Q4_0 choose differently too.
IMATRIX_PRESETS = ("Q2_K_S", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_M",
                   "IQ4_XS", "Q4_0")

# Run inside a fresh interpreter: llama.cpp's converter with the three patches described above.
ORACLE_RUNNER = r'''
import runpy, sys
llama_cpp, pre_name = sys.argv[1], sys.argv[2]
sys.path.insert(0, llama_cpp)
import conversion.base as base
import conversion.bitnet as bitnet
_pre = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return _pre(self, tokenizer)
    except NotImplementedError:
        return pre_name
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
bitnet.BitnetModel.set_vocab = base.TextModel._set_vocab_gpt2
_modify = bitnet.BitnetModel.modify_tensors
def modify_tensors(self, data, name, bid):
    name = name.replace("self_attn.attn_sub_norm", "self_attn.inner_attn_ln").replace("mlp.ffn_sub_norm",
                                                                                      "mlp.ffn_layernorm")
    return _modify(self, data, name, bid)
bitnet.BitnetModel.modify_tensors = modify_tensors
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[3:]
runpy.run_path(llama_cpp + "/convert_hf_to_gguf.py", run_name="__main__")
'''


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def describe_gguf(path):
    """Metadata (key -> [type, value or {count, sha}]) and tensors ([name, shape, type, sha]) of a GGUF file."""
    from gguf import GGUFReader, GGUFValueType
    r = GGUFReader(path)
    meta = {}
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        types = [t.name for t in f.types]
        v = f.contents()
        if isinstance(v, list) and len(v) > 8:
            blob = json.dumps(v, ensure_ascii=False).encode()
            v = {"count": len(v), "sha": sha(blob), "head": v[:3]}
        elif f.types[0] == GGUFValueType.FLOAT32:
            v = float(v)
        meta[f.name] = [types, v]
    tensors = [[t.name, [int(d) for d in reversed(t.shape)], t.tensor_type.name, sha(bytes(t.data.tobytes()))]
               for t in r.tensors]
    return {"metadata": meta, "tensors": tensors}


def make_hf():
    sys.path.insert(0, ROOT)
    from kvant.convert.pretokenizers import pre_from_structure
    result = {"llama_cpp": LLAMA_CPP, "patches": [
        "get_vocab_base_pre: unknown hash -> kvant.convert.pretokenizers.pre_from_structure(tokenizer.json)",
        "BitnetModel.set_vocab -> TextModel._set_vocab_gpt2 (the fixture has no tokenizer.model)",
        "BitnetModel.modify_tensors: self_attn.attn_sub_norm -> self_attn.inner_attn_ln, "
        "mlp.ffn_sub_norm -> mlp.ffn_layernorm (the names llama.cpp's tensor map knows)"],
        "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        runner = os.path.join(tmp, "runner.py")
        with open(runner, "w") as f:
            f.write(ORACLE_RUNNER)
        for name in FIXTURES:
            dst = os.path.join(HF_TINY, name)
            with open(os.path.join(dst, "tokenizer.json"), encoding="utf-8") as f:
                pre = pre_from_structure(json.load(f)) or "gpt-2"
            result["models"][name] = {}
            for outtype in OUTTYPES:
                out = os.path.join(tmp, f"{name}-{outtype}.gguf")
                subprocess.run([sys.executable, runner, LLAMA_CPP, pre, dst, "--outfile", out, "--outtype", outtype],
                               check=True, capture_output=True)
                result["models"][name][outtype] = describe_gguf(out)
                print(name, outtype, "ok", flush=True)
    with open(os.path.join(OUT, "llamacpp_convert.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, indent=0, sort_keys=False)


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def make_quantize():
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import llamacpp_oracle as oracle
    from kvant.convert.pipeline import convert
    from kvant.formats.gguf_file import GGUFFile
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in FIXTURES:
            f32 = os.path.join(tmp, f"{name}-F32.gguf")
            convert(os.path.join(HF_TINY, name), f32, "F32", progress=False)
            result[name] = {"F32": file_sha(f32)}
            for preset in QUANT_PRESETS:
                out = os.path.join(tmp, f"{name}-{preset}.gguf")
                oracle.quantize(f32, out, preset)
                with GGUFFile(out) as g:
                    tensors = [[n, t.ggml_type.name, sha(g.raw(n).tobytes())] for n, t in g.tensors.items()]
                result[name][preset] = {"sha256": file_sha(out), "tensors": tensors}
                os.unlink(out)
                print(name, preset, "ok", flush=True)
    with open(os.path.join(OUT, "llamacpp_quantize.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=0)


def model_facts(md):
    arch = md["general.architecture"]
    nh = int(md[f"{arch}.attention.head_count"])
    return {"arch": arch, "n_layer": int(md[f"{arch}.block_count"]), "n_head": nh,
            "n_head_kv": int(md.get(f"{arch}.attention.head_count_kv", nh)),
            "n_expert": int(md.get(f"{arch}.expert_count", 0))}


def make_presets():
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import llamacpp_oracle as oracle
    from kvant.formats.gguf_file import GGUFFile
    models = {
        "smollm2": (os.environ.get("KVANT_SMOLLM2_F32", "/work/models/smollm2/SmolLM2-F32.gguf"),
                    os.environ.get("KVANT_SMOLLM2_IMATRIX", "/work/models/SmolLM2.imatrix.gguf")),
        "gemma3-270m": (os.environ.get("KVANT_GEMMA3_F32", "/work/models/gemma3-F32.gguf"),
                        os.environ.get("KVANT_GEMMA3_IMATRIX", "/work/models/gemma3-270m.imatrix.gguf")),
    }
    result = {}
    for key, (src, imatrix) in models.items():
        with GGUFFile(src) as g:
            entry = {"source": os.path.basename(src), "facts": model_facts(g.metadata),
                     "tensors": [[n, list(t.shape), t.ggml_type.name] for n, t in g.tensors.items()], "presets": {}}
        names = [t[0] for t in entry["tensors"]]
        runs = [(p, None) for p in PRESETS] + [(p, imatrix) for p in IMATRIX_PRESETS]
        for preset, im in runs:
            sibling = os.path.join(os.path.dirname(src), f"{os.path.basename(src).rsplit('-', 1)[0]}-{preset}.gguf")
            tmp = None
            if im is not None or not os.path.exists(sibling) or sibling == src:
                fd, tmp = tempfile.mkstemp(suffix=".gguf", dir=os.environ.get("TMPDIR", "/tmp"))
                os.close(fd)
                oracle.quantize(src, tmp, preset, imatrix=im)
                sibling = tmp
            try:
                with GGUFFile(sibling) as q:
                    types = {n: t.ggml_type.name for n, t in q.tensors.items()}
                    entry["presets"][preset + ("+imatrix" if im else "")] = {
                        "file_type": int(q.metadata["general.file_type"]), "imatrix": im is not None,
                        "types": " ".join(types[n] for n in names)}
            finally:
                if tmp:
                    os.unlink(tmp)
            print(key, preset, "imatrix" if im else "", "ok", flush=True)
        result[key] = entry
    with open(os.path.join(OUT, "preset_types.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=0)


if __name__ == "__main__":
    parts = sys.argv[1:] or ["hf", "quantize", "presets"]
    os.makedirs(OUT, exist_ok=True)
    for part in parts:
        {"hf": make_hf, "presets": make_presets, "quantize": make_quantize}[part]()
