"""A TinyLlama-shaped 1.1B llama with random weights and SmolLM2's tokenizer, to see the large-model regime of the
speed benchmark (d_model 2048, 22 layers, ffn 5632, 32 heads, 4 KV heads). Written as F16 into bench/.work/, then
quantized by kvant's own `qconv quantize` (byte-identical with llama-quantize) to the asked types; the types qconv
does not write yet (IQ1-IQ3) by llama-quantize with an importance matrix from llama-imatrix on a few chunks of
../shared/corpora/en.txt (python bench/build_llama_bench.py builds both).

    python bench/make_tinyllama.py [--types Q4_K_M,Q8_0]      # prints the paths
"""
import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, ".work")
D_MODEL, N_LAYER, D_FF, N_HEAD, N_KV = 2048, 22, 5632, 32, 4
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                  "tokenizer.ggml.add_bos_token", "tokenizer.chat_template")


def write_f16(path):
    import gguf
    from kvant.formats.gguf_file import open_gguf
    from kvant.runtime.model_cache import resolve_model
    with open_gguf(resolve_model("smollm2")) as src:
        md = {k: src.metadata[k] for k in TOKENIZER_KEYS if k in src.metadata}
    n_vocab = len(md["tokenizer.ggml.tokens"])
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path + ".partial", "llama")
    w.add_name("TinyLlama-shaped random 1.1B")
    w.add_context_length(2048)
    w.add_embedding_length(D_MODEL)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(D_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(D_MODEL // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model(md["tokenizer.ggml.model"])
    w.add_tokenizer_pre(md["tokenizer.ggml.pre"])
    w.add_token_list(md["tokenizer.ggml.tokens"])
    w.add_token_types([int(t) for t in md["tokenizer.ggml.token_type"]])
    w.add_token_merges(md["tokenizer.ggml.merges"])
    w.add_bos_token_id(int(md["tokenizer.ggml.bos_token_id"]))
    w.add_eos_token_id(int(md["tokenizer.ggml.eos_token_id"]))
    w.add_add_bos_token(bool(md.get("tokenizer.ggml.add_bos_token", False)))

    def matrix(name, rows, cols):
        w.add_tensor(name, (rng.standard_normal((rows, cols), np.float32) * 0.02).astype(np.float16))

    def norm(name):
        w.add_tensor(name, np.ones(D_MODEL, np.float32))

    head = D_MODEL // N_HEAD
    matrix("token_embd.weight", n_vocab, D_MODEL)
    norm("output_norm.weight")
    matrix("output.weight", n_vocab, D_MODEL)
    for i in range(N_LAYER):
        norm(f"blk.{i}.attn_norm.weight")
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", N_HEAD * head, D_MODEL)
        matrix(f"blk.{i}.attn_k.weight", N_KV * head, D_MODEL)
        matrix(f"blk.{i}.attn_v.weight", N_KV * head, D_MODEL)
        matrix(f"blk.{i}.attn_output.weight", D_MODEL, D_MODEL)
        matrix(f"blk.{i}.ffn_gate.weight", D_FF, D_MODEL)
        matrix(f"blk.{i}.ffn_up.weight", D_FF, D_MODEL)
        matrix(f"blk.{i}.ffn_down.weight", D_MODEL, D_FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(path + ".partial", path)


def tinyllama(type_name):
    os.makedirs(WORK, exist_ok=True)
    f16 = os.path.join(WORK, "tinyllama-1.1B-random-F16.gguf")
    if not os.path.exists(f16):
        write_f16(f16)
    if type_name == "F16":
        return f16
    path = os.path.join(WORK, f"tinyllama-1.1B-random-{type_name}.gguf")
    if not os.path.exists(path):
        if type_name in LLAMA_QUANTIZED:
            _llama_quantize(f16, path, type_name)
        else:
            subprocess.run([sys.executable, "-m", "kvant.convert.cli", "quantize", f16, path, type_name], check=True)
    return path


LLAMA_QUANTIZED = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M"}
TOOLS = os.path.join(WORK, "llama.cpp-build", "bin")


def _llama_quantize(f16, path, type_name):
    matrix = os.path.join(WORK, "tinyllama-1.1B-random.imatrix.gguf")
    if not os.path.exists(matrix):
        text = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "corpora", "en.txt")
        subprocess.run([os.path.join(TOOLS, "llama-imatrix"), "-m", f16, "-f", text, "-o", matrix, "-c", "128",
                        "--chunks", "4", "-t", "2", "--no-ppl"], check=True, capture_output=True)
    subprocess.run([os.path.join(TOOLS, "llama-quantize"), "--imatrix", matrix, f16, path + ".partial", type_name,
                    "2"], check=True, capture_output=True)
    os.replace(path + ".partial", path)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default="Q4_K_M,Q8_0")
    for t in ap.parse_args().types.split(","):
        print(tinyllama(t))
