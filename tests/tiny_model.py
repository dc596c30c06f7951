"""A tiny random llama-architecture GGUF (byte-level BPE vocab, chatml template) written with the gguf package,
so the unit tier can drive the whole runtime (CLI, chat, errors) without a real model."""
import numpy as np
import gguf

D_MODEL, N_LAYER, N_HEAD, N_KV, D_FF = 64, 2, 4, 2, 128
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he"]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def byte_tokens():
    """GPT-2's printable stand-ins for the 256 bytes, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return [mapping[b] for b in range(256)]


def vocab():
    tokens = byte_tokens() + ["Ġt", "he", "Ġthe"] + SPECIALS
    types = [1] * (len(tokens) - len(SPECIALS)) + [3] * len(SPECIALS)
    return tokens, types


def write_tiny_model(path, arch="llama", seed=0, weight_type="Q8_0", tensor_type_override=None,
                     tool_use_template=None):
    rng = np.random.default_rng(seed)
    tokens, types = vocab()
    n_vocab = len(tokens)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(256)
    w.add_embedding_length(D_MODEL)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(D_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(tokens.index("<|endoftext|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_add_bos_token(False)
    # (the gguf package writes named templates as tokenizer.chat_template.<name>, as llama.cpp reads them)
    w.add_chat_template(TEMPLATE if tool_use_template is None else
                        [{"name": "default", "template": TEMPLATE}, {"name": "tool_use", "template": tool_use_template}])
    qtype = gguf.GGMLQuantizationType[weight_type]

    def matrix(name, rows, cols):
        data = (rng.standard_normal((rows, cols)) * 0.2).astype(np.float32)
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    def norm(name, n):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    matrix("token_embd.weight", n_vocab, D_MODEL)
    norm("output_norm.weight", D_MODEL)
    head = D_MODEL // N_HEAD
    for i in range(N_LAYER):
        norm(f"blk.{i}.attn_norm.weight", D_MODEL)
        matrix(f"blk.{i}.attn_q.weight", N_HEAD * head, D_MODEL)
        matrix(f"blk.{i}.attn_k.weight", N_KV * head, D_MODEL)
        matrix(f"blk.{i}.attn_v.weight", N_KV * head, D_MODEL)
        matrix(f"blk.{i}.attn_output.weight", D_MODEL, N_HEAD * head)
        norm(f"blk.{i}.ffn_norm.weight", D_MODEL)
        matrix(f"blk.{i}.ffn_gate.weight", D_FF, D_MODEL)
        matrix(f"blk.{i}.ffn_up.weight", D_FF, D_MODEL)
        matrix(f"blk.{i}.ffn_down.weight", D_MODEL, D_FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def tensor_info_offset(path, tensor_name):
    """Byte offset just after a tensor's name in the header: n_dims (u32), dims (u64 each), type (u32), offset (u64)."""
    data = open(path, "rb").read()
    key = np.uint64(len(tensor_name)).tobytes() + tensor_name.encode()
    pos = data.index(key)
    return pos + len(key)


def metadata_value_offset(path, key):
    """Byte offset of a scalar metadata value: after the key's length (u64), the key and its value type (u32)."""
    data = open(path, "rb").read()
    encoded = np.uint64(len(key)).tobytes() + key.encode()
    return data.index(encoded) + len(encoded) + 4


def patch(path, offset, value_bytes):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(value_bytes)
