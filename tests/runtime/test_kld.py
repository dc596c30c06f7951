"""KL divergence as llama-perplexity computes it: its base-file format both ways, the statistics, and bad files."""
import gzip
import json
import os
import struct

import numpy as np
import pytest

from conftest import FIXTURES
from kvant.runtime import kld
from kvant.runtime.cli import main

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
ARGS = ["-c", "64", "--chunks", "5", "-t", "1"]      # 5 x 31 scored tokens: the statistics need 100


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("kld") / "t.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture(scope="module")
def base(tiny, text_file, tmp_path_factory):
    """The tiny model's base file, and the perplexity the same command printed."""
    from kvant.runtime.api import Model
    path = tmp_path_factory.mktemp("kld") / "base.bin"
    with Model(tiny, n_threads=1) as m, open(path, "wb") as f:
        r = m.perplexity(TEXT, n_ctx=64, n_chunks=5, kl_base=f)
    return path, r


def test_the_base_file_has_llamas_layout(base, tiny):
    path, r = base
    data = path.read_bytes()
    assert data[:8] == b"_logits_"
    n_ctx, n_vocab, n_chunk = struct.unpack("<Iii", data[8:20])
    rows = n_chunk * (n_ctx - 1 - n_ctx // 2)
    assert (n_ctx, n_chunk) == (64, 5) and rows == r.n_tokens_scored
    assert len(data) == 20 + 4 * n_ctx * n_chunk + 2 * rows * kld.row_width(n_vocab)


def test_a_model_against_its_own_base_diverges_by_nothing(capsys, tiny, base):
    path, r = base
    code, out, err = run(capsys, "perplexity", tiny, "--kl-divergence-base", path, "--kl-divergence", "--json",
                         "-t", "1")
    assert code == 0, err
    s = json.loads(out)
    assert s["n_tokens"] == r.n_tokens_scored
    assert abs(s["kld_mean"]) < 1e-5 and s["same_top_p"] == 1.0      # (16-bit rounding: may be just below 0)
    assert s["ppl_q"] == pytest.approx(r.ppl, rel=1e-5)
    assert s["ppl_base"] == pytest.approx(r.ppl, rel=1e-3)          # 16-bit log-probabilities
    code, out, err = run(capsys, "perplexity", tiny, "--kl-divergence-base", path, "--kl-divergence", "-t", "1")
    lines = out.splitlines()
    assert lines[0] == "====== Perplexity statistics ======" and lines[-1].startswith("Same top p: 100.000 ±")
    mean = next(line for line in lines if line.startswith("Mean    KLD: "))
    assert abs(float(mean.split(":")[1].split("±")[0])) < 1e-5


def test_the_cli_writes_the_base_whole_or_not_at_all(capsys, tiny, text_file, base, tmp_path):
    out_path = tmp_path / "b.bin"
    code, out, err = run(capsys, "perplexity", tiny, "-f", text_file, *ARGS, "--kl-divergence-base", out_path)
    assert code == 0, err
    assert out_path.read_bytes() == base[0].read_bytes()
    short = tmp_path / "short.txt"
    short.write_text("the fox")
    failed = tmp_path / "never.bin"
    before = sorted(os.listdir(tmp_path))
    code, out, err = run(capsys, "perplexity", tiny, "-f", short, *ARGS, "--kl-divergence-base", failed)
    assert code == 1 and err.count("\n") == 1 and "tokens" in err
    assert sorted(os.listdir(tmp_path)) == before         # neither the file nor its temporary one


@pytest.mark.parametrize("damage, needle", [
    ("truncated", "cut short"),
    ("not a base", "not a KL-divergence base file"),
    ("other vocabulary", "vocabulary of 7 tokens"),
    ("empty", "not a KL-divergence base file"),
])
def test_a_bad_base_file_is_one_line(capsys, tiny, base, tmp_path, damage, needle):
    data = base[0].read_bytes()
    bad = {"truncated": data[:len(data) // 2], "not a base": b"GGUF" + data[4:],
           "other vocabulary": data[:12] + struct.pack("<i", 7) + data[16:], "empty": b""}[damage]
    path = tmp_path / "bad.bin"
    path.write_bytes(bad)
    code, out, err = run(capsys, "perplexity", tiny, "--kl-divergence-base", path, "--kl-divergence", "-t", "1")
    assert code == 1 and out == "" and err.count("\n") == 1 and needle in err, err


def test_kl_divergence_needs_its_base_file(capsys, tiny, tmp_path):
    code, out, err = run(capsys, "perplexity", tiny, "--kl-divergence")
    assert code != 0 and "--kl-divergence-base" in err and err.count("\n") == 1
    code, out, err = run(capsys, "perplexity", tiny, "--kl-divergence", "--kl-divergence-base", tmp_path / "none")
    assert code != 0 and "no such file" in err


def test_statistics_of_a_known_pair():
    """Two hand-made distributions: the KL divergence, the top-token agreement and the probability change."""
    base_logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], np.float32))
    q_logits = np.log(np.array([[0.25, 0.5, 0.25], [0.1, 0.2, 0.7]], np.float32))
    targets = np.array([0, 2])
    stats = kld.KLDivergence()
    stats.add(q_logits, targets, kld.encode_rows(base_logits))
    exact = 0.5 * np.log(2) + 0.25 * np.log(0.5)          # row 0: sum p log(p / q); row 1: 0
    assert stats.sums["kld"] == pytest.approx(exact, abs=1e-4)
    assert stats.n_same_top == 1 and stats.count == 2
    assert stats.sums["p_diff"] == pytest.approx(0.25 - 0.5, abs=1e-4)


@pytest.mark.realmodel
def test_a_base_written_by_llamacpp_is_read(smollm2_path):
    """llama-perplexity's own base file (tests/make_kld_fixture.py): its tokens are kvant's tokens of the same text,
    its log-probabilities give back the perplexity llama-perplexity printed, and kvant's distributions on the same
    file are within a small KL divergence of llama.cpp's."""
    from kvant.runtime.api import Model
    from shared_files import corpus
    with open(os.path.join(FIXTURES, "llamacpp", "kld-base-smollm2.json")) as f:
        ref = json.load(f)
    with Model(smollm2_path, n_threads=2, n_ctx=64) as m, \
            gzip.open(os.path.join(FIXTURES, "llamacpp", "kld-base-smollm2.bin.gz")) as base:
        header = kld.read_header(base, m.config.n_vocab)
        base.seek(0)
        tokens = m.tokenize(corpus("en")[:ref["text_chars"]], add_bos=None)
        assert list(header.tokens) == tokens[:ref["n_ctx"]]
        stats = m.kl_divergence(base)
    n = stats.count
    assert n == ref["n_ctx"] - 1 - ref["n_ctx"] // 2
    assert np.exp(stats.sums["nll_base"] / n) == pytest.approx(ref["chunk_ppl"], rel=1e-3)
    assert stats.sums["kld"] / n < 0.01 and stats.n_same_top >= n - 1


@pytest.mark.realmodel
def test_kvants_base_file_is_llamas_layout_and_encoding(smollm2_path, tmp_path):
    """The other direction: the base file kvant writes for the text and model of llama-perplexity's stored one
    (tests/make_kld_fixture.py) has its bytes where llama.cpp has them (header, tokens, size), its rows decode as
    llama.cpp decodes its own to nearly llama.cpp's distributions, and kvant's row encoding gives back llama.cpp's
    own rows: a row of llama.cpp's, decoded and encoded again, is the same scale, minimum and 16-bit codes (so
    llama-perplexity reads what kvant writes as it reads its own; bench/quality.py runs it on kvant's bases)."""
    from kvant.runtime.api import Model
    from shared_files import corpus
    with open(os.path.join(FIXTURES, "llamacpp", "kld-base-smollm2.json")) as f:
        ref = json.load(f)
    with gzip.open(os.path.join(FIXTURES, "llamacpp", "kld-base-smollm2.bin.gz")) as f:
        theirs = f.read()
    path = tmp_path / "base.bin"
    with Model(smollm2_path, n_threads=2, n_ctx=64) as m, open(path, "wb") as f:
        m.perplexity(corpus("en")[:ref["text_chars"]], n_ctx=ref["n_ctx"], n_chunks=1, kl_base=f)
        n_vocab = m.config.n_vocab
    ours = path.read_bytes()
    head = len(kld.MAGIC) + 12 + 4 * ref["n_ctx"]
    assert ours[:head] == theirs[:head] and len(ours) == len(theirs)
    width = kld.row_width(n_vocab)
    rows, our_rows = (np.frombuffer(data[head:], "<u2").reshape(-1, width) for data in (theirs, ours))
    n_ctx = ref["n_ctx"]
    assert len(rows) == n_ctx - 1 - n_ctx // 2
    scale, low, log_probs = kld.decode_rows(rows, n_vocab)
    _, _, our_log_probs = kld.decode_rows(our_rows, n_vocab)
    # kvant's distributions as llama.cpp's reader sees them, scored against llama.cpp's rows by kld's own statistics:
    # the same top tokens, within the small KL divergence test_a_base_written_by_llamacpp_is_read allows (8-bit
    # activations make both models' logits chaotic); row i predicts token n_ctx // 2 + 1 + i
    stats = kld.KLDivergence()
    tokens = np.frombuffer(ours[len(kld.MAGIC) + 12:head], "<i4").astype(np.int64)
    stats.add(our_log_probs, tokens[n_ctx // 2 + 1:], rows)
    assert stats.n_same_top == stats.count == len(rows) and stats.sums["kld"] / stats.count < 0.01
    again = kld.encode_rows(log_probs)
    again_scale, again_low, _ = kld.decode_rows(again, n_vocab)
    # (the minimum moves by the probability of the tokens clamped to it: 16 nats down, ~4e4 tokens x 1e-7)
    assert np.allclose(again_scale, scale, rtol=1e-5) and np.allclose(again_low, low, atol=1e-2)
    codes, again_codes = rows[:, 4:4 + n_vocab].astype(np.int64), again[:, 4:4 + n_vocab].astype(np.int64)
    assert np.abs(codes - again_codes).max() <= 1 and (codes == again_codes).mean() > 0.99
