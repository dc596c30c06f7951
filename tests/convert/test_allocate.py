"""qconv quantize --target-bpw: the knapsack against brute force, the runtime's editable weights, the allocation and
its CLI on the tiny model."""
import itertools
import math
import os

import numpy as np
import pytest

from kvant.convert import allocate as al
from kvant.convert.cli import main as qconv_main
from kvant.formats.gguf_file import GGUFFile
from kvant.runtime.api import Model
from kvant.runtime.editable import EditableWeights
from tiny_model import write_tiny_model

TEXT = ("the quick brown fox jumps over the lazy dog; a stitch in time saves nine. " * 12
        + "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 6)


@pytest.mark.parametrize("seed", range(6))
def test_solve_is_the_exact_optimum(seed):
    rng = np.random.default_rng(seed)
    names = [f"t{i}" for i in range(4)]
    choices = {n: [al.Choice(f"T{j}", int(b), float(e)) for j, (b, e) in
                   enumerate(zip(sorted(rng.integers(10, 200, 3)), sorted(rng.random(3), reverse=True)))]
               for n in names}
    alphas = {n: float(rng.random() * 3) for n in names}
    budget = int(sum(c[1].nbytes for c in choices.values()))
    types, cost = al.solve(choices, alphas, budget)
    best = min((sum(alphas[n] * c.err for n, c in zip(names, combo)), combo)
               for combo in itertools.product(*(choices[n] for n in names))
               if sum(c.nbytes for c in combo) <= budget)
    assert cost == pytest.approx(best[0])
    assert sum(next(c.nbytes for c in choices[n] if c.type == types[n]) for n in names) <= budget
    assert sum(alphas[n] * next(c.err for c in choices[n] if c.type == types[n]) for n in names) == \
        pytest.approx(cost)


def test_solve_refuses_a_budget_below_the_smallest_types():
    choices = {"a": [al.Choice("T0", 100, 1.0)], "b": [al.Choice("T0", 100, 1.0)]}
    with pytest.raises(al.AllocateError, match="below"):
        al.solve(choices, {"a": 1.0, "b": 1.0}, 150)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(write_tiny_model(tmp_path_factory.mktemp("alloc") / "tiny-f32.gguf", weight_type="F32"))


def _logits(model, tokens):
    return [logits.copy() for _, logits in model.scored_chunks(tokens, 64, 2)]


def test_editable_weights_are_what_the_forward_pass_reads(tiny):
    with Model(tiny, n_ctx=64) as model:
        tokens = model.tokenize(TEXT, add_bos=None)
        before = _logits(model, tokens)
        weights = EditableWeights(model.transformer)
        assert np.allclose(_logits(model, tokens)[0], before[0], atol=1e-4)   # F32 from the same F32 values
        same = _logits(model, tokens)
        for name in ("blk.0.attn_k.weight", "blk.1.ffn_down.weight", "token_embd.weight"):
            w = weights.rows[name]
            original = w.copy()
            w += np.float32(0.05)
            assert not np.allclose(_logits(model, tokens)[0], same[0], atol=1e-4), name
            w[:] = original
            assert np.array_equal(_logits(model, tokens)[0], same[0]), name


def test_allocation_spends_the_budget_where_the_loss_answers(tiny):
    types = ("Q4_0", "Q8_0", "F16")
    with GGUFFile(tiny) as f:
        choices = al.candidates(f, al.allowed_types(f, types))
        fixed, n_weights = al.fixed_bytes_and_weights(f, choices)
    assert set(choices) == {n for n in choices if n.endswith(".weight")} and "token_embd.weight" in choices
    for c in choices.values():
        assert [x.type for x in c] == ["Q4_0", "Q8_0", "F16"] and c[0].err > c[1].err > c[2].err >= 0
    smallest = (fixed + sum(c[0].nbytes for c in choices.values())) * 8 / n_weights
    largest = (fixed + sum(c[-1].nbytes for c in choices.values())) * 8 / n_weights
    low = al.allocate(tiny, smallest + 1e-6, types, TEXT, n_ctx=64, n_chunks=2)
    assert set(low.types.values()) == {"Q4_0"} and low.bpw <= smallest + 1e-6
    high = al.allocate(tiny, largest + 0.01, types, TEXT, n_ctx=64, n_chunks=2)
    assert set(high.types.values()) == {"F16"}
    assert high.predicted_dloss < low.predicted_dloss
    assert all(a >= 0 and math.isfinite(a) for a in low.alphas.values()) and max(low.alphas.values()) > 0
    mid = al.allocate(tiny, (smallest + largest) / 2, types, TEXT, n_ctx=64, n_chunks=2)
    assert mid.bpw <= (smallest + largest) / 2 and len(set(mid.types.values())) > 1
    assert low.predicted_dloss > mid.predicted_dloss > high.predicted_dloss
    with pytest.raises(al.AllocateError, match="below the smallest"):
        al.allocate(tiny, smallest * 0.9, types, TEXT, n_ctx=64, n_chunks=2)


def _run(args, capsys):
    code = qconv_main(args)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("args, message", [
    (["Q4_0", "--target-bpw", "5"], "either a PRESET or --target-bpw"),
    ([], "either a PRESET or --target-bpw"),
    (["--target-bpw", "5"], "needs --calibration"),
    (["--target-bpw", "5", "--calibration", "TEXT", "--types", "Q4_0,Q9_9"], "Q9_9"),
    (["--target-bpw", "0.5", "--calibration", "TEXT", "--types", "Q4_0,Q8_0"], "below the smallest"),
])
def test_bad_allocation_requests_are_one_line(tiny, tmp_path, capsys, args, message):
    text = tmp_path / "cal.txt"
    text.write_text(TEXT)
    out = tmp_path / "out.gguf"
    args = [a if a != "TEXT" else str(text) for a in args]
    code, err = _run(["quantize", tiny, str(out)] + args, capsys)
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_cli_writes_the_allocation_and_checks_the_theorem(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(al, "allocate", _small_ctx(al.allocate))
    monkeypatch.setattr(al, "measured_dloss", _small_ctx(al.measured_dloss))
    text = tmp_path / "cal.txt"
    text.write_text(TEXT)
    out = tmp_path / "out.gguf"
    code, err = _run(["quantize", tiny, str(out), "--target-bpw", "12", "--calibration", str(text), "--types",
                      "Q4_0,Q8_0,F16"], capsys)
    assert code == 0, err
    assert "predicted" in err and "measured" in err and "bits per weight" in err
    with GGUFFile(str(out)) as f:
        types = {t.ggml_type.name for n, t in f.tensors.items() if n.endswith(".weight") and len(t.shape) == 2}
        size = sum(t.nbytes for t in f.tensors.values())
        n = sum(int(np.prod(t.shape)) for t in f.tensors.values())
    assert types <= {"Q4_0", "Q8_0", "F16"} and 8 * size / n <= 12
    with Model(str(out), n_ctx=64) as m:
        assert m.generate("the", max_tokens=2, temperature=0) is not None


def _small_ctx(fn):
    def wrapped(*args, **kwargs):
        kwargs["n_ctx"] = 64
        return fn(*args, **kwargs)
    return wrapped


def test_a_probe_resumed_at_its_layer_scores_as_the_whole_forward_pass(tiny):
    with Model(tiny, n_ctx=64, n_batch=64) as model:
        tokens = model.tokenize(TEXT, add_bos=None)
        weights = EditableWeights(model.transformer)
        states = []
        base = al._mean_nll(model, tokens, 64, 2, states)
        assert len(states) == 2 and len(states[0]) == model.config.n_layer + 1
        assert base == al._mean_nll(model, tokens, 64, 2)
        weights.rows["blk.1.attn_v.weight"] += np.float32(0.05)
        full = al._mean_nll(model, tokens, 64, 2)
        assert full != base
        assert al._mean_nll(model, tokens, 64, 2, states, 1) == pytest.approx(full, abs=1e-9)
        assert al._first_layer_reading("blk.1.attn_v.weight", 2) == 1
        assert al._first_layer_reading("output.weight", 2) == 2 and al._first_layer_reading("token_embd.weight", 2) == 0
    with Model(tiny, n_ctx=64, n_batch=32) as model, pytest.raises(ValueError, match="one batch"):
        next(model.scored_chunks(model.tokenize(TEXT, add_bos=None), 64, 1, []))
