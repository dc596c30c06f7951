"""qconv imatrix: collection with kvant's runtime, llama.cpp's GGUF and legacy .dat formats, and quantization with an
importance matrix byte-identical with llama-quantize.

Fixtures (tests/make_imatrix_fixtures.py): <model>.imatrix.gguf / .dat collected by `qconv imatrix` on two tiny
checkpoints, the .gguf being also what libggml's gguf writer makes from the same statistics, and
llamacpp_quantize_imatrix.json: llama_model_quantize's output (sha256 of the file, per tensor hashes) with those
importance matrices on kvant's F32 conversion of the checkpoints.
"""
import hashlib
import json
import os
import struct
import sys
from collections import defaultdict

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_helpers import HF, f32_files, file_sha  # noqa: E402,F401  (session fixture)
from kvant.convert import imatrix_collect as ic  # noqa: E402
from kvant.convert.cli import main  # noqa: E402
from kvant.convert.imatrix import read_imatrix  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "fixtures", "imatrix")
with open(os.path.join(FIX, "llamacpp_quantize_imatrix.json"), encoding="utf-8") as _f:
    ORACLE = json.load(_f)
MODELS = tuple(ORACLE["models"])
WORDS = ("the quick brown fox jumps over a lazy dog while seven tired wizards quietly hum old songs about "
         "rivers mountains and the sea").split()


def sample_text(n_words, seed=0):
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n_words)) + "\n"


@pytest.fixture(scope="module")
def f32(f32_files):  # noqa: F811
    """kvant's F32 conversion of the fixture checkpoints (the input llama_model_quantize was given)."""
    return f32_files


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_model import write_tiny_model
    return str(write_tiny_model(tmp_path_factory.mktemp("imatrix-tiny") / "tiny.gguf"))


def load(path, n_ctx):
    from kvant.runtime import Model
    return Model(path, n_ctx=n_ctx, n_threads=1)


def spy_on_collector(monkeypatch):
    """Every (name, x) the collector is shown, copied."""
    seen = defaultdict(list)
    real = ic.Collector.__call__

    def spy(self, name, x):
        seen[name].append(np.array(x, copy=True))
        real(self, name, x)
    monkeypatch.setattr(ic.Collector, "__call__", spy)
    return seen


# ---------------------------------------------------------------- collection
def test_collector_selects_what_llama_imatrix_collects():
    c = ic.Collector(process_output=False)
    x = np.ones((16, 4), np.float32)
    for name in ("blk.0.attn_q.weight", "token_embd.weight", "output.weight", "rope_freqs.weight"):
        c(name, x)
    c("blk.0.ffn_up.weight", np.ones((15, 4), np.float32))  # fewer than 16 rows: ignored, as llama.cpp
    assert list(c.sums) == ["blk.0.attn_q.weight"]
    c = ic.Collector(process_output=True)
    c("output.weight", x)
    c("token_embd.weight", x)  # a tied head is token_embd.weight: llama-imatrix never collects it
    assert list(c.sums) == ["output.weight"] and c.counts["output.weight"].tolist() == [16]


def test_collector_refuses_non_finite_values():
    c = ic.Collector()
    c("blk.0.attn_q.weight", np.full((16, 4), np.inf, np.float32))
    with pytest.raises(ic.ImatrixCollectError, match="non-finite values detected in blk.0.attn_q.weight"):
        c.check_finite()


def test_chunks_and_pieces():
    toks = list(range(100, 110))
    assert ic.chunk_tokens(toks, 4, None, None) == [[100, 101, 102, 103], [104, 105, 106, 107]]
    assert ic.chunk_tokens(toks, 4, 1, 7) == [[7, 101, 102, 103]]
    assert ic.chunk_tokens(toks, 4, 0, 7) == [[7, 101, 102, 103], [7, 105, 106, 107]]
    with pytest.raises(ic.ImatrixCollectError, match="at least 12"):
        ic.chunk_tokens(toks, 6, None, None)
    assert ic.chunk_pieces(100, 512) == [(0, 100)]
    assert ic.chunk_pieces(520, 512) == [(0, 520)]                      # no 8-token call (it would be skipped)
    assert ic.chunk_pieces(1100, 512) == [(0, 512), (512, 1024), (1024, 1100)]


def test_read_text_drops_one_trailing_newline(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("a b\n\n".encode())
    assert ic.read_text(str(p)) == "a b\n"


@pytest.mark.parametrize("process_output", [False, True])
def test_sums_are_sum_of_squares_of_every_matmul_input(monkeypatch, f32, process_output):
    """Over the llama fixture (untied output head): each entry is the float64 sum over all tokens of x^2 of the
    inputs the runtime fed that weight, the count is the number of tokens, and nothing but blk.* (and output.weight
    with process_output) is collected."""
    seen = spy_on_collector(monkeypatch)
    m = load(f32["llama"], 32)
    res = ic.collect(m, sample_text(400), n_ctx=32, n_chunks=3, process_output=process_output, dataset="t.txt")
    st = res.stats
    want = {n for n in seen if n.startswith("blk.")} | ({"output.weight"} if process_output else set())
    assert set(st.sums) == want and len(want) == 2 * 7 + process_output
    for name in want:
        xs = np.concatenate(seen[name]).astype(np.float64)
        assert xs.shape[0] == 3 * 32
        np.testing.assert_allclose(st.sums[name][0], (xs * xs).sum(axis=0), rtol=1e-12, atol=0)
        assert st.counts[name].tolist() == [3 * 32]
    assert st.chunk_count == 3 and st.chunk_size == 32 and st.datasets == ["t.txt"]
    assert res.n_chunks == 3 and res.n_tokens == 96


def _rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps) * w


def test_first_layer_sums_from_the_embeddings(f32):
    """Independent of the runtime: blk.0.attn_q's input is rmsnorm(embedding * sqrt(d)) * attn_norm (gemma3) of
    llama-imatrix's chunks -- BOS first in every chunk (this vocab adds one), consecutive n_ctx tokens of the
    tokenized text (which itself starts with BOS)."""
    from kvant.formats.dequant import dequantize
    from kvant.formats.gguf_file import GGUFFile
    n_ctx, n_chunks = 24, 3
    text = sample_text(300, seed=3)
    m = load(f32["gemma3"], n_ctx)
    res = ic.collect(m, text, n_ctx=n_ctx, n_chunks=n_chunks, compute_ppl=False)
    tok = m.tokenizer
    assert tok.add_bos
    ids = [tok.bos_id] + tok.encode(text, add_special=False)
    chunks = [[tok.bos_id] + ids[c * n_ctx + 1:(c + 1) * n_ctx] for c in range(n_chunks)]
    with GGUFFile(f32["gemma3"]) as g:
        emb = dequantize(g.raw("token_embd.weight"), g.tensors["token_embd.weight"].ggml_type).astype(np.float64)
        norm = g.raw("blk.0.attn_norm.weight").view(np.float32).astype(np.float64).reshape(-1)
        eps = float(g.metadata["gemma3.attention.layer_norm_rms_epsilon"])
    d = emb.shape[1]
    x = np.concatenate([emb[c] for c in chunks]) * np.float32(np.sqrt(np.float32(d)))
    h = _rmsnorm(x, norm, eps)
    np.testing.assert_allclose(res.stats.sums["blk.0.attn_q.weight"][0], (h * h).sum(axis=0), rtol=2e-5)
    assert res.stats.counts["blk.0.attn_q.weight"].tolist() == [n_chunks * n_ctx]


@pytest.mark.parametrize("process_output", [False, True])
def test_reported_perplexity_is_the_runtimes(f32, process_output):
    m = load(f32["llama"], 32)
    text = sample_text(400, seed=5)
    res = ic.collect(m, text, n_ctx=32, n_chunks=3, process_output=process_output)
    # the same sums up to float order: with process_output all 32 positions go through the output head, perplexity
    # sends the 16 it scores, and the float GEMM may take another kernel for another token count (_common)
    assert res.ppl == pytest.approx(m.perplexity(text, n_ctx=32, n_chunks=3).ppl, rel=1e-6)


# ---------------------------------------------------------------- file formats
def made_stats():
    st = ic.ImatrixStats(datasets=["data/en.txt"], chunk_size=64)
    rng = np.random.default_rng(1)
    st.sums["blk.1.ffn_down.weight"] = rng.random((1, 8)) * 100
    st.counts["blk.1.ffn_down.weight"] = np.array([192])
    st.sums["blk.0.attn_q.weight"] = rng.random((1, 4)) * 10
    st.counts["blk.0.attn_q.weight"] = np.array([130])
    st.sums["blk.0.ffn_up_exps.weight"] = rng.random((3, 4))  # per-expert counts, one expert never routed to
    st.counts["blk.0.ffn_up_exps.weight"] = np.array([64, 0, 5])
    return st


def test_gguf_round_trip(tmp_path):
    st = made_stats()
    p = str(tmp_path / "i.gguf")
    ic.write_imatrix_gguf(p, st)
    im = read_imatrix(p)
    assert not im.legacy and im.datasets == ["data/en.txt"] and im.chunk_count == 3 and im.chunk_size == 64
    means = st.means()
    assert set(im.values) == set(means)
    for k in means:
        np.testing.assert_array_equal(im.values[k], means[k])
    np.testing.assert_array_equal(im.values["blk.0.ffn_up_exps.weight"][4:8], 1.0)
    back = ic.stats_from_file(p)
    for k in st.sums:
        np.testing.assert_array_equal(back.sums[k], st.sums[k].astype(np.float32))
        np.testing.assert_array_equal(back.counts[k], st.counts[k])
    from kvant.formats.gguf_file import GGUFFile
    with GGUFFile(p) as g:
        assert list(g.metadata)[-4:] == ["general.type", "imatrix.datasets", "imatrix.chunk_count",
                                         "imatrix.chunk_size"]
        assert g.metadata["general.type"] == "imatrix"
        assert list(g.tensors)[:2] == ["blk.0.attn_q.weight.in_sum2", "blk.0.attn_q.weight.counts"]
        assert g.tensors["blk.0.attn_q.weight.in_sum2"].shape == (4,)          # ggml_n_dims: 1-D when n_mat is 1
        assert g.tensors["blk.0.attn_q.weight.counts"].shape == (1,)
        assert g.tensors["blk.0.ffn_up_exps.weight.in_sum2"].shape == (3, 4)
        assert g.tensors["blk.0.ffn_up_exps.weight.counts"].shape == (3, 1)


def test_legacy_bytes_are_save_imatrix_legacy():
    st = made_stats()
    st.sums["blk.2.never.weight"] = np.ones((1, 2))
    st.counts["blk.2.never.weight"] = np.array([0])   # no data at all: not stored in the .dat
    data = ic.legacy_bytes(st)
    want = [struct.pack("<i", 3)]
    for name in ("blk.0.attn_q.weight", "blk.0.ffn_up_exps.weight", "blk.1.ffn_down.weight"):
        s = st.sums[name].astype(np.float32).reshape(-1)
        c = st.counts[name]
        ncall = -(-int(c.max()) // 64)
        cnt = np.repeat(c.astype(np.float32), s.size // c.size)
        v = np.where(cnt == 0, np.float32(1), s) / np.where(cnt == 0, np.float32(1), cnt) * np.float32(ncall)
        want.append(struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", ncall, s.size))
        want.append(v.astype("<f4").tobytes())
    want.append(struct.pack("<i", 3) + struct.pack("<i", 11) + b"data/en.txt")
    assert data == b"".join(want)


def test_legacy_round_trip(tmp_path):
    st = made_stats()
    p = str(tmp_path / "i.dat")
    ic.write_imatrix_dat(p, st)
    im = read_imatrix(p)
    assert im.legacy and im.datasets == ["data/en.txt"] and im.chunk_count == 3
    for k, v in st.means().items():
        np.testing.assert_allclose(im.values[k], v, rtol=1e-6)  # (sum/count)*ncall/ncall: an ulp may move


def test_writers_refuse_to_overwrite_and_leave_nothing_behind(tmp_path):
    from kvant.convert.gguf_writer import OutputExistsError
    st = made_stats()
    for fmt in ("gguf", "dat"):
        p = tmp_path / f"i.{fmt}"
        p.write_bytes(b"old")
        with pytest.raises(OutputExistsError):
            ic.write_imatrix(str(p), st, fmt)
        assert p.read_bytes() == b"old"
        umask = os.umask(0o022)
        try:
            ic.write_imatrix(str(p), st, fmt, force=True)
        finally:
            os.umask(umask)
        assert read_imatrix(str(p)).chunk_count == 3
        assert p.stat().st_mode & 0o777 == 0o644  # as a plainly created file, not the temp file's 0600
    assert sorted(os.listdir(tmp_path)) == ["i.dat", "i.gguf"]


@pytest.mark.parametrize("name", MODELS)
def test_fixture_gguf_is_what_llamacpps_writer_writes(tmp_path, name):
    """The stored .gguf is byte-identical with libggml's gguf writer's output for its statistics
    (make_imatrix_fixtures.py checks that); kvant's writer must reproduce it from the same statistics."""
    src = os.path.join(FIX, f"{name}.imatrix.gguf")
    assert file_sha(src) == ORACLE["models"][name]["imatrix_gguf"]
    st = ic.stats_from_file(src)
    out = str(tmp_path / "again.gguf")
    ic.write_imatrix_gguf(out, st)
    assert file_sha(out) == file_sha(src)
    # and the legacy file from the same statistics
    with open(os.path.join(FIX, f"{name}.imatrix.dat"), "rb") as f:
        assert ic.legacy_bytes(st) == f.read()
    entry = ORACLE["models"][name]
    assert sorted(st.sums) == entry["entries"] and st.chunk_count == entry["chunk_count"]
    assert ("output.weight" in st.sums) == ("--process-output" in entry["options"])


@pytest.mark.parametrize("name", MODELS)
def test_collection_matches_llamacpps_own(f32, name, monkeypatch):
    """<model>.llamacpp.gguf: llama-imatrix's collect_imatrix run as llama.cpp's eval callback over the same chunks
    of text.txt (make_imatrix_fixtures.py). kvant must collect the same weights, the same counts and chunk count,
    and sums within float tolerance (the activations come from two different runtimes)."""
    entry = ORACLE["models"][name]
    want = ic.stats_from_file(os.path.join(FIX, f"{name}.llamacpp.gguf"))
    n_ctx, n_chunks = int(entry["options"][1]), int(entry["options"][3])
    monkeypatch.chdir(FIX)
    m = load(f32[name], n_ctx)
    got = ic.collect(m, ic.read_text("text.txt"), n_ctx=n_ctx, n_chunks=n_chunks,
                     process_output="--process-output" in entry["options"], compute_ppl=False,
                     dataset="text.txt").stats
    assert sorted(got.sums) == sorted(want.sums) == entry["llamacpp_collected"]["entries"]
    assert got.chunk_count == want.chunk_count == entry["chunk_count"] and got.datasets == want.datasets
    for k in want.sums:
        assert got.counts[k].tolist() == want.counts[k].tolist() == [n_chunks * n_ctx], k
        np.testing.assert_allclose(got.sums[k], want.sums[k], rtol=5e-3, err_msg=k)


# ---------------------------------------------------------------- quantization with an importance matrix
QUANT_CASES = [(m, "gguf", p) for m in MODELS for p in ORACLE["models"][m]["quantize"]] + \
              [(m, "dat", p) for m in MODELS for p in ORACLE["models"][m]["quantize_dat"]]


def explain(path, want):
    from kvant.formats.gguf_file import GGUFFile
    with GGUFFile(path) as g:
        got = [[n, t.ggml_type.name, hashlib.sha256(g.raw(n).tobytes()).hexdigest()[:16]]
               for n, t in g.tensors.items()]
    if [t[:2] for t in got] != [t[:2] for t in want["tensors"]]:
        return f"tensor order or types differ: {[t[:2] for t in got]} vs {[t[:2] for t in want['tensors']]}"
    bad = [a[0] for a, b in zip(got, want["tensors"]) if a[2] != b[2]]
    return f"{len(bad)} tensors differ: {bad[:6]}" if bad else "the metadata differs"


@pytest.mark.parametrize("name,fmt,preset", QUANT_CASES)
def test_quantize_with_imatrix_matches_llama_quantize(tmp_path, f32, name, fmt, preset):
    from kvant.convert.requantize import quantize_gguf
    key = "quantize" if fmt == "gguf" else "quantize_dat"
    fixture = f"{name}.imatrix.{fmt}"
    out = str(tmp_path / "q.gguf")
    quantize_gguf(f32[name], out, preset, imatrix=read_imatrix(os.path.join(FIX, fixture)), imatrix_arg=fixture,
                  progress=False)
    want = ORACLE["models"][name][key][preset]
    assert file_sha(out) == want["sha256"], explain(out, want)


def test_imatrix_changes_the_quantization():
    """The fixtures exercise the importance-weighted paths: most tensors differ from llama-quantize without one."""
    for name, entry in ORACLE["models"].items():
        for preset in ("Q4_K_M", "Q3_K_M", "Q2_K", "IQ4_XS", "Q4_0"):
            assert entry["quantize"][preset]["tensors_changed_by_imatrix"] >= len(entry["entries"]), (name, preset)


@pytest.mark.parametrize("name,preset", [("llama", "Q4_K_M"), ("gemma3", "IQ4_XS")])
def test_to_gguf_with_imatrix_matches_convert_then_llama_quantize(tmp_path, name, preset):
    from kvant.convert.pipeline import convert
    fixture = f"{name}.imatrix.gguf"
    out = str(tmp_path / "q.gguf")
    convert(os.path.join(HF, name), out, preset, imatrix=read_imatrix(os.path.join(FIX, fixture)),
            imatrix_arg=fixture, progress=False)
    want = ORACLE["models"][name]["quantize"][preset]
    assert file_sha(out) == want["sha256"], explain(out, want)


def test_qconv_quantize_imatrix_cli(tmp_path, f32, capsys, monkeypatch):
    monkeypatch.chdir(FIX)  # quantize.imatrix.file records the argument as given
    out = str(tmp_path / "q.gguf")
    assert main(["quantize", f32["llama"], out, "Q3_K_M", "--imatrix", "llama.imatrix.gguf"]) == 0
    assert file_sha(out) == ORACLE["models"]["llama"]["quantize"]["Q3_K_M"]["sha256"]


# ---------------------------------------------------------------- the command
def assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qconv: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def test_qconv_imatrix_end_to_end(tmp_path, f32, capsys):
    text = tmp_path / "t.txt"
    text.write_text(sample_text(500, seed=7))
    out = tmp_path / "im.gguf"
    code = main(["imatrix", f32["llama"], "-f", str(text), "-o", str(out), "-c", "32", "--chunks", "2",
                 "--process-output", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "chunk 2/2" in err and "wrote" in err
    im = read_imatrix(str(out))
    assert im.chunk_count == 2 and im.chunk_size == 32 and im.datasets == [str(text)]
    assert "output.weight" in im.values and all(k.startswith("blk.") or k == "output.weight" for k in im.values)
    # the legacy format, read back the same (to an ulp)
    dat = tmp_path / "im.dat"
    assert main(["imatrix", f32["llama"], "-f", str(text), "-o", str(dat), "-c", "32", "--chunks", "2",
                 "--process-output", "--output-format", "dat", "--no-ppl"]) == 0
    legacy = read_imatrix(str(dat))
    assert legacy.legacy and legacy.chunk_count == 2 and set(legacy.values) == set(im.values)
    for k in im.values:
        np.testing.assert_allclose(legacy.values[k], im.values[k], rtol=1e-6)
    # and it quantizes
    q = tmp_path / "q.gguf"
    assert main(["quantize", f32["llama"], str(q), "Q4_K_M", "--imatrix", str(out)]) == 0
    capsys.readouterr()


def test_qconv_imatrix_errors(tmp_path, tiny, capsys, monkeypatch):
    text = tmp_path / "t.txt"
    text.write_text(sample_text(20))
    out = tmp_path / "im.gguf"
    code = main(["imatrix", tiny, "-f", str(text), "-o", str(out), "-c", "64"])
    assert_one_line_error(code, capsys.readouterr().err, "at least 128")
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.endswith(".part")]
    code = main(["imatrix", tiny, "-f", str(tmp_path / "missing.txt"), "-o", str(out)])
    assert_one_line_error(code, capsys.readouterr().err, "missing.txt")
    code = main(["imatrix", str(tmp_path / "nomodel.gguf"), "-f", str(text), "-o", str(out)])
    assert_one_line_error(code, capsys.readouterr().err, "nomodel.gguf")
    out.write_bytes(b"keep")
    code = main(["imatrix", tiny, "-f", str(text), "-o", str(out)])
    assert_one_line_error(code, capsys.readouterr().err, "exists", "--force")
    assert out.read_bytes() == b"keep"
    # default output name, as llama-imatrix: imatrix.gguf in the working directory; --force replaces
    text.write_text(sample_text(300))
    monkeypatch.chdir(tmp_path)
    assert main(["imatrix", tiny, "-f", "t.txt", "-c", "16", "--chunks", "2"]) == 0
    assert read_imatrix(str(tmp_path / "imatrix.gguf")).datasets == ["t.txt"]
    assert main(["imatrix", tiny, "-f", "t.txt", "-c", "16", "-o", str(out), "--force"]) == 0
    assert read_imatrix(str(out)).chunk_size == 16
    # a name without .gguf: a warning, still the GGUF format
    capsys.readouterr()
    assert main(["imatrix", tiny, "-f", "t.txt", "-c", "16", "--chunks", "2", "-o", "im.bin"]) == 0
    assert "warning" in capsys.readouterr().err
    assert not read_imatrix(str(tmp_path / "im.bin")).legacy


def _stats(shapes):
    """Importance statistics for the given {name: n columns}, 3 chunks of 64 tokens."""
    st = ic.ImatrixStats(datasets=["other.txt"], chunk_size=64)
    for name, n in shapes.items():
        st.sums[name] = np.full((1, n), 2.0 * 192)
        st.counts[name] = np.array([192])
    return st


@pytest.mark.parametrize("preset", ["IQ2_XXS", "IQ1_S", "Q2_K_S", "IQ3_XS"])
def test_preset_needing_an_imatrix_refused_without_one(tmp_path, f32, capsys, preset):
    out = tmp_path / "q.gguf"
    code = main(["quantize", f32["llama"], str(out), preset])
    assert_one_line_error(code, capsys.readouterr().err, f"{preset} needs an importance matrix", "qconv imatrix",
                          "--imatrix")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("case,needle", [
    ("foreign names", "has none of this model's tensors"),
    ("wrong size", "has 128 values for blk.0.attn_q.weight, the tensor needs 256"),
    ("missing tensor", "has no entry for blk.1.ffn_down.weight, which IQ2_XXS cannot be made without"),
])
def test_imatrix_from_another_model_refused_before_writing(tmp_path, f32, capsys, case, needle):
    """Names or sizes that do not match this model: one line, and nothing written (llama-quantize stops too)."""
    want = read_imatrix(os.path.join(FIX, "llama.imatrix.gguf")).values
    shapes = {k: v.size for k, v in want.items()}
    if case == "foreign names":
        shapes = {"model." + k: n for k, n in shapes.items()}
    elif case == "wrong size":
        shapes["blk.0.attn_q.weight"] = 128
    else:
        del shapes["blk.1.ffn_down.weight"]
    im = str(tmp_path / "other.imatrix.gguf")
    ic.write_imatrix_gguf(im, _stats(shapes))
    out = tmp_path / "q.gguf"
    code = main(["quantize", f32["llama"], str(out), "IQ2_XXS", "--imatrix", im])
    assert_one_line_error(code, capsys.readouterr().err, needle)
    assert sorted(os.listdir(tmp_path)) == ["other.imatrix.gguf"]
