"""qconv to-gguf on the six tiny checkpoints against what llama.cpp's own convert_hf_to_gguf.py writes for them.

tests/fixtures/convert/llamacpp_convert.json (tests/make_convert_fixtures.py hf) holds llama.cpp's output for
every --outtype it offers (f32, f16, bf16, q8_0, tq1_0, tq2_0): every key with its GGUF type and value, every
tensor's name, shape, type and a hash of its bytes. kvant must write the same keys in the same order and the same tensor bytes, except where kvant
knowingly differs (EXTRA_KEYS, KEPT_TERNARY below; convert/README.md says why).
"""
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_helpers import HF, MODELS, file_sha, load_json, maker
from kvant.convert.pipeline import convert
from kvant.convert.safetensors_io import Checkpoint
from kvant.formats.gguf_file import GGUFFile

ORACLE = load_json("llamacpp_convert.json")["models"]
OUTTYPES = ("f32", "f16", "bf16", "q8_0", "tq1_0", "tq2_0")
# keys kvant adds that llama.cpp's converter does not write (both are keys llama.cpp's loader knows)
EXTRA_KEYS = {"gemma3": {"gemma3.attention.sliding_window_pattern": [["ARRAY", "BOOL"], [True, False]]},
              "bitnet": {"bitnet.hidden_activation": [["STRING"], "relu2"]}}
# the bitnet fixture's projections are already ternary x scale: kvant keeps them, llama.cpp's converter rescales
KEPT_TERNARY = re.compile(r"blk\.\d+\.(attn_[qkv]|attn_output|ffn_gate|ffn_up|ffn_down)\.weight")


@pytest.mark.parametrize("outtype", OUTTYPES)
@pytest.mark.parametrize("name", MODELS)
def test_matches_llama_cpp_converter(tmp_path, name, outtype):
    out = str(tmp_path / "out.gguf")
    convert(os.path.join(HF, name), out, outtype.upper(), progress=False)
    with GGUFFile(out) as g:  # kvant's own validating reader accepts it
        assert len(g.tensors) == len(ORACLE[name][outtype]["tensors"])
    got, want = maker.describe_gguf(out), ORACLE[name][outtype]
    extra = EXTRA_KEYS.get(name, {})
    for key, value in extra.items():
        assert got["metadata"].pop(key) == value
    assert list(got["metadata"]) == list(want["metadata"]), "key order"
    for key, value in want["metadata"].items():
        assert got["metadata"][key] == value, key
    assert [t[:3] for t in got["tensors"]] == [t[:3] for t in want["tensors"]], "tensor table"
    differ = [g[0] for g, w in zip(got["tensors"], want["tensors"]) if g[3] != w[3]]
    expected = [t[0] for t in want["tensors"] if name == "bitnet" and KEPT_TERNARY.fullmatch(t[0])]
    assert differ == expected


def test_bitnet_projections_kept_as_they_are(tmp_path):
    out = str(tmp_path / "bitnet.gguf")
    convert(os.path.join(HF, "bitnet"), out, "F32", progress=False)
    ckpt = Checkpoint(os.path.join(HF, "bitnet"))
    with GGUFFile(out) as g:
        w = g.raw("blk.1.ffn_down.weight").view(np.float32).reshape(256, 512)
        np.testing.assert_array_equal(w, ckpt.read_f32("model.layers.1.mlp.down_proj.weight"))
        assert len(np.unique(np.abs(w))) == 2  # 0 and the tensor's scale


def test_ternarize_latent_weights_like_llama_cpp():
    from kvant.convert.archs import apply_ternary, ternarize, ternary_scale
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 256)).astype(np.float32) * 0.02
    t = ternarize(w)
    s = np.abs(w).mean(dtype=np.float64)
    assert set(np.unique(np.round(t / np.float32(s)).astype(int))) <= {-1, 0, 1}
    np.testing.assert_allclose(np.abs(t[t != 0]), s, rtol=1e-6)
    # measured over slabs of rows (as the pipeline does), the scale is the same to the bit, whatever the split
    for cuts in ([1], [7, 8, 40], list(range(1, 64))):
        scale = ternary_scale(None, w.shape, lambda: iter(np.split(w, cuts)))
        assert scale == ternary_scale(None, w.shape, lambda: iter((w,)))
        np.testing.assert_array_equal(np.concatenate([apply_ternary(x, scale) for x in np.split(w, cuts)]), t)
    ternary = np.where(w > 0.01, np.float32(0.3), np.where(w < -0.01, np.float32(-0.3), np.float32(0)))
    assert ternary_scale(None, w.shape, lambda: iter(np.split(ternary, [5, 60]))) is None  # kept as it is


# ---------------------------------------------------------------- sharded checkpoints and config variants
def save_safetensors(path, tensors):
    """A minimal safetensors writer (name -> (dtype name, shape, raw bytes)), so BF16 round-trips untouched."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for b in blobs:
            f.write(b)


def copy_model(src, dst, skip=("model.safetensors",)):
    os.makedirs(dst, exist_ok=True)
    for fn in os.listdir(src):
        if fn not in skip and not fn.endswith(".npy"):
            shutil.copyfile(os.path.join(src, fn), os.path.join(dst, fn))
    return dst


def reshard(src, dst, n_shards=3):
    copy_model(src, dst)
    ckpt = Checkpoint(src)
    names = ckpt.names()
    chunks = np.array_split(np.arange(len(names)), n_shards)
    weight_map = {}
    for i, idx in enumerate(chunks):
        fn = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {}
        for j in idx:
            e = ckpt.entries[names[j]]
            part[e.name] = (e.dtype, e.shape, ckpt.read(e.name).tobytes())
            weight_map[e.name] = fn
        save_safetensors(os.path.join(dst, fn), part)
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


@pytest.mark.parametrize("name", ["llama", "qwen2"])  # bf16 and f32 weights
def test_three_shards_convert_to_the_same_bytes(tmp_path, name):
    reshard(os.path.join(HF, name), str(tmp_path / name))
    a, b = str(tmp_path / "single.gguf"), str(tmp_path / "sharded.gguf")
    convert(os.path.join(HF, name), a, "F32", progress=False)
    convert(str(tmp_path / name), b, "F32", progress=False)
    assert file_sha(a) == file_sha(b)


def edited(tmp_path, name, edit_config=None, drop=()):
    d = str(tmp_path / f"{name}-edited")
    copy_model(os.path.join(HF, name), d, skip=tuple(drop))
    if edit_config is not None:
        with open(os.path.join(d, "config.json")) as f:
            cfg = json.load(f)
        edit_config(cfg)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
    return d


def rope_top_level(cfg):
    cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]


def rope_as_rope_scaling(cfg):
    cfg["rope_scaling"] = cfg.pop("rope_parameters")


def gemma_old_rope(cfg):
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rp["full_attention"]["rope_theta"]
    cfg["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]


VARIANTS = [
    ("llama", "rope_theta at top level", rope_top_level, ()),
    ("llama", "rope in rope_scaling", rope_as_rope_scaling, ()),
    ("llama", "head_dim derived", lambda c: c.pop("head_dim"), ()),
    ("qwen2", "tie_word_embeddings absent", lambda c: c.pop("tie_word_embeddings"), ()),
    ("qwen3", "no generation_config.json", None, ("generation_config.json",)),
    ("gemma3", "gemma rope_theta + rope_local_base_freq", gemma_old_rope, ()),
    ("gemma3", "layer_types from the sliding window pattern", lambda c: c.pop("layer_types") and
     c.update(sliding_window_pattern=2), ()),
]


@pytest.mark.parametrize("name,label,edit,drop", VARIANTS, ids=[v[1] for v in VARIANTS])
def test_config_variants_convert_to_the_same_bytes(tmp_path, name, label, edit, drop):
    d = edited(tmp_path, name, edit, drop=("model.safetensors",) + drop)
    os.symlink(os.path.abspath(os.path.join(HF, name, "model.safetensors")), os.path.join(d, "model.safetensors"))
    a, b = str(tmp_path / "a.gguf"), str(tmp_path / "b.gguf")
    convert(os.path.join(HF, name), a, "F32", progress=False)
    convert(d, b, "F32", progress=False)
    with GGUFFile(a) as ga, GGUFFile(b) as gb:
        ma, mb = dict(ga.metadata), dict(gb.metadata)
        ma.pop("general.name"), mb.pop("general.name")  # the directory name
        assert ma.keys() == mb.keys()
        for k in ma:
            assert np.array_equal(ma[k], mb[k]) if isinstance(ma[k], np.ndarray) else ma[k] == mb[k], k
        for t in ga.tensors:
            assert np.array_equal(ga.raw(t), gb.raw(t)), t


def test_linear_rope_scaling_is_written(tmp_path):
    def scaled(cfg):
        cfg["rope_scaling"] = {"type": "linear", "factor": 4.0}
        cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
    d = edited(tmp_path, "qwen2", scaled)
    out = str(tmp_path / "o.gguf")
    convert(d, out, "F32", progress=False)
    with GGUFFile(out) as g:
        assert g.metadata["qwen2.rope.scaling.type"] == "linear"
        assert g.metadata["qwen2.rope.scaling.factor"] == 4.0
        assert g.metadata["qwen2.rope.freq_base"] == 10000.0


def test_gemma3_window_pattern_and_rope_bases(tmp_path):
    out = str(tmp_path / "g.gguf")
    convert(os.path.join(HF, "gemma3"), out, "F32", progress=False)
    with GGUFFile(out) as g:
        md = g.metadata
        assert list(md["gemma3.attention.sliding_window_pattern"]) == [True, False]
        assert md["gemma3.attention.sliding_window"] == 8
        assert md["gemma3.rope.freq_base"] == 1e6 and md["gemma3.rope.freq_base_swa"] == 1e4
        norm = g.raw("blk.0.attn_norm.weight").view(np.float32).reshape(-1)
    src = Checkpoint(os.path.join(HF, "gemma3")).read_f32("model.layers.0.input_layernorm.weight")
    np.testing.assert_array_equal(norm, src + np.float32(1))


def test_llama_q_k_rows_permuted(tmp_path):
    out = str(tmp_path / "l.gguf")
    convert(os.path.join(HF, "mistral"), out, "F32", progress=False)
    src = Checkpoint(os.path.join(HF, "mistral")).read_f32("model.layers.0.self_attn.k_proj.weight")
    with GGUFFile(out) as g:
        k = g.raw("blk.0.attn_k.weight").view(np.float32).reshape(128, 256)
    # per KV head (64 rows): HF rows [0..31] and [32..63] interleave into pairs
    np.testing.assert_array_equal(k[0], src[0])
    np.testing.assert_array_equal(k[1], src[32])
    np.testing.assert_array_equal(k[2], src[1])
    np.testing.assert_array_equal(k[64 + 1], src[64 + 32])


# ---------------------------------------------------------------- tokenizer
def test_bpe_tokenizer_keys(tmp_path):
    out = str(tmp_path / "q.gguf")
    convert(os.path.join(HF, "qwen3"), out, "F32", progress=False)
    with open(os.path.join(HF, "qwen3", "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    with GGUFFile(out) as g:
        md = g.metadata
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "gpt-2"
    assert md["tokenizer.ggml.tokens"][5] == next(t for t, i in tj["model"]["vocab"].items() if i == 5)
    assert list(md["tokenizer.ggml.token_type"][:4]) == [3, 3, 3, 1]
    assert md["tokenizer.ggml.merges"][:2] == tj["model"]["merges"][:2] or \
        md["tokenizer.ggml.merges"][0] == " ".join(tj["model"]["merges"][0])
    assert (md["tokenizer.ggml.bos_token_id"], md["tokenizer.ggml.eos_token_id"]) == (0, 2)
    with open(os.path.join(HF, "qwen3", "chat_template.jinja"), encoding="utf-8") as f:
        assert md["tokenizer.chat_template"] == f.read()


def test_sentencepiece_tokenizer_keys(tmp_path):
    out = str(tmp_path / "g.gguf")
    convert(os.path.join(HF, "gemma3"), out, "F32", progress=False)
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor(model_file=os.path.join(HF, "gemma3", "tokenizer.model"))
    with GGUFFile(out) as g:
        md = g.metadata
    assert md["tokenizer.ggml.model"] == "llama" and md["tokenizer.ggml.add_space_prefix"] is False
    assert md["tokenizer.ggml.tokens"][100] == sp.IdToPiece(100)
    assert md["tokenizer.ggml.scores"][100] == np.float32(sp.GetScore(100))
    assert md["tokenizer.ggml.unknown_token_id"] == sp.unk_id()


def test_known_hash_and_structure_names():
    from kvant.convert import pretokenizers as pt
    assert pt.HASHES["0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5"] == "llama-bpe"
    assert pt.HASHES["855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249"] == "smollm"
    llama3 = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pt.LLAMA3_RE}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}}
    smollm = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}]}}
    assert pt.pre_from_structure(llama3) == "llama-bpe"
    assert pt.pre_from_structure(smollm) == "smollm"
    assert pt.pre_from_structure({"pre_tokenizer": {"type": "Whitespace"}}) is None


# ---------------------------------------------------------------- row lengths that are not whole blocks
def tiny_llama(path, hidden=96, ff=200, heads=3, kv_heads=1, layers=2):
    """A random llama checkpoint whose rows (96, 200) are not whole 256-blocks, nor (200) 32-blocks."""
    os.makedirs(path, exist_ok=True)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(HF, "llama", fn), os.path.join(path, fn))
    cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": hidden, "intermediate_size": ff,
           "num_attention_heads": heads, "num_key_value_heads": kv_heads, "num_hidden_layers": layers,
           "vocab_size": 512, "rms_norm_eps": 1e-5, "max_position_embeddings": 256, "tie_word_embeddings": False}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    rng = np.random.default_rng(0)
    hd = hidden // heads
    shapes = {"model.embed_tokens.weight": (512, hidden), "lm_head.weight": (512, hidden),
              "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        kv = kv_heads * hd
        shapes.update({p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
                       p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (kv, hidden),
                       p + "self_attn.v_proj.weight": (kv, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
                       p + "mlp.gate_proj.weight": (ff, hidden), p + "mlp.up_proj.weight": (ff, hidden),
                       p + "mlp.down_proj.weight": (hidden, ff)})
    save_safetensors(os.path.join(path, "model.safetensors"),
                     {n: ("F32", s, (rng.standard_normal(s) * 0.05).astype(np.float32).tobytes())
                      for n, s in shapes.items()})
    return path


def test_row_length_fallbacks(tmp_path):
    d = tiny_llama(str(tmp_path / "odd"))
    out = str(tmp_path / "odd.gguf")
    convert(d, out, "Q4_K_M", progress=False)
    with GGUFFile(out) as g:
        types = {n: t.ggml_type.name for n, t in g.tensors.items()}
    assert types["output.weight"] == "Q8_0"        # Q6_K does not tile 96 columns
    assert types["token_embd.weight"] == "Q5_0"    # Q4_K -> Q5_0
    assert types["blk.0.attn_q.weight"] == "Q5_0"
    assert types["blk.0.ffn_down.weight"] == "F16"  # 200 columns: not even 32-blocks
    assert types["blk.0.attn_norm.weight"] == "F32"


# ---------------------------------------------------------------- slabs of rows
# A tensor is read, transformed, encoded and written in slabs of rows (pipeline.SLAB_BYTES of float32), so that a
# big one never exists whole as float32. Small slabs must give the same bytes as each tensor in one slab. 100 KiB
# is 100 rows of 256 floats (the fixtures' 512-row tensors in 6 slabs, the last one shorter) and one 64-row
# attention head of q or k (the permutation is done per slab of whole heads). Not smaller: each numba call of a
# parallel quantizer costs milliseconds.
WHOLE, SMALL = 1 << 40, 100 << 10


def converted_both_ways(tmp_path, src, preset, small=SMALL):
    a, b = str(tmp_path / "whole.gguf"), str(tmp_path / "slabs.gguf")
    convert(src, a, preset, progress=False, slab_bytes=WHOLE)
    convert(src, b, preset, progress=False, slab_bytes=small)
    return a, b


@pytest.mark.parametrize("name,preset", [("llama", "Q4_K_M"), ("mistral", "Q6_K"), ("gemma3", "Q4_0"),
                                         ("bitnet", "TQ2_0"), ("qwen2", "F16")])
def test_slabs_give_the_same_bytes(tmp_path, name, preset):
    a, b = converted_both_ways(tmp_path, os.path.join(HF, name), preset)
    assert file_sha(a) == file_sha(b)


def test_slabs_of_heads_with_rows_not_whole_blocks(tmp_path):
    d = tiny_llama(str(tmp_path / "odd"))  # 3 heads of 32 rows of 96 floats: 40 rows' worth gives one per slab
    a, b = converted_both_ways(tmp_path, d, "Q4_K_M", small=40 * 96 * 4)
    assert file_sha(a) == file_sha(b)


def rewritten(tmp_path, name, change):
    """A copy of a fixture whose tensors are change(name, float32 array) -> (dtype name, array)."""
    d = copy_model(os.path.join(HF, name), str(tmp_path / f"{name}-rewritten"))
    ckpt = Checkpoint(os.path.join(HF, name))
    tensors = {}
    for n in ckpt.names():
        dtype, x = change(n, ckpt.read_f32(n))
        tensors[n] = (dtype, x.shape, x.astype({"F32": np.float32, "F16": np.float16}[dtype]).tobytes())
    save_safetensors(os.path.join(d, "model.safetensors"), tensors)
    return d


def test_slabs_of_f16_weights_and_dropped_embedding_rows(tmp_path):
    """gemma3 in F16 (the +1 of the norms in float16) with 40 embedding rows past the vocabulary (dropped)."""
    def f16_extra_rows(n, x):
        return "F16", np.concatenate([x, x[:40]]) if n == "model.embed_tokens.weight" else x
    d = rewritten(tmp_path, "gemma3", f16_extra_rows)
    a, b = converted_both_ways(tmp_path, d, "Q4_K_M")
    assert file_sha(a) == file_sha(b)
    with GGUFFile(b) as g:
        rows = g.tensors["token_embd.weight"].shape[0]
    assert rows == Checkpoint(d).entries["model.embed_tokens.weight"].shape[0] - 40


def test_slabs_of_latent_bitnet_weights(tmp_path):
    """BitNet projections that are not ternary yet: the scale is measured over all slabs before any is written."""
    rng = np.random.default_rng(3)
    d = rewritten(tmp_path, "bitnet", lambda n, x: ("F32", x + rng.standard_normal(x.shape).astype(np.float32) * 0.01
                                                    if "proj" in n else x))
    a, b = converted_both_ways(tmp_path, d, "F32")
    assert file_sha(a) == file_sha(b)
    from kvant.convert.archs import ternarize
    with GGUFFile(b) as g:
        w = g.raw("blk.1.ffn_down.weight").view(np.float32).reshape(256, 512)
    np.testing.assert_array_equal(w, ternarize(Checkpoint(d).read_f32("model.layers.1.mlp.down_proj.weight")))
