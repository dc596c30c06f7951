"""qrun end to end on a tiny random model: outputs, and one clear line for every kind of bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kvant.runtime.cli import main
from tiny_model import D_FF, metadata_value_offset, patch, tensor_info_offset, write_tiny_model


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_greedy_matches_api(capsys, tiny):
    from kvant.runtime import Model
    code, out, err = run(capsys, "generate", tiny, "-p", "the the", "-n", "12", "--temp", "0", "-t", "1")
    assert code == 0, err
    expected = Model(tiny).generate("the the", max_tokens=12, temperature=0)
    assert out == expected          # the text alone: a newline is added only on a terminal


def test_tokenize_ids_is_one_json_list(capsys, tiny):
    code, out, err = run(capsys, "tokenize", tiny, "-p", "the the", "--ids")
    assert code == 0, err
    ids = json.loads(out)
    tokens_the = 256 + 2          # "Ġthe" after the merges Ġ t, h e, Ġt he; "the" alone is t + he
    assert ids[-1] == tokens_the and len(ids) == 3


def test_perplexity_prints_final_estimate_and_json(capsys, tiny, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    code, out, err = run(capsys, "perplexity", tiny, "-f", str(text), "-c", "64", "--chunks", "2")
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("Final estimate: PPL = ")
    code, out, err = run(capsys, "perplexity", tiny, "-f", str(text), "-c", "64", "--chunks", "2", "--json")
    result = json.loads(out)
    assert result["n_chunks"] == 2 and result["ppl"] == pytest.approx(float(last.split("=")[1]), rel=1e-4)


@pytest.mark.parametrize("argv, bar", [
    (["perplexity", "-f", "TEXT", "-c", "64", "--chunks", "2"], "perplexity: 100%|"),
    (["bench", "-p", "16,8", "-n", "2", "-r", "2"], "bench: 100%|"),
])
def test_long_commands_draw_a_progress_bar_on_a_terminal(capsys, monkeypatch, tiny, tmp_path, argv, bar):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    argv = [argv[0], tiny, "-t", "1", *[str(text) if a == "TEXT" else a for a in argv[1:]]]
    code, out, err = run(capsys, *argv)
    assert code == 0 and "|" not in err          # not on a pipe or a log
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out_tty, err = run(capsys, *argv)
    assert code == 0 and bar in err, err         # tqdm's frames: the last one at 100%, then wiped (leave=False)
    if argv[0] == "perplexity":
        assert "2/2 [" in err and "ppl=" in err and out_tty == out


def test_bench_json(capsys, tiny):
    code, out, err = run(capsys, "bench", tiny, "-p", "16", "-n", "4", "-t", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["pp_tok_s"]["16"] > 0 and result["tg_tok_s"] > 0 and result["threads"] == 1
    assert result["n_prompt"] == [16] and result["weight_bytes"] > 0


def test_model_given_by_dash_m_is_the_one_run(capsys, tiny):
    # llama.cpp's -m FILE: the same as the positional MODEL (it was once ignored for the default model)
    code, out, err = run(capsys, "bench", "-m", tiny, "-p", "8", "-n", "2", "-t", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == os.path.basename(tiny)
    code, out, err = run(capsys, "bench", "smollm2", "-m", tiny, "-p", "8", "-n", "2", "-t", "1")
    assert code != 0 and "two models given" in err and "Traceback" not in err


def test_bench_several_prompt_lengths(capsys, tiny):
    # llama-bench's -p 128,512: one prompt-processing figure per length, in the order given
    code, out, err = run(capsys, "bench", tiny, "-p", "16,8", "-n", "2", "-t", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert list(result["pp_tok_s"]) == ["16", "8"] and all(v > 0 for v in result["pp_tok_s"].values())
    code, out, err = run(capsys, "bench", tiny, "-p", "16,8", "-n", "2", "-t", "1")
    assert code == 0, err
    assert "pp16: " in out and "pp8: " in out and "tg2: " in out


def test_bench_depth_runs_each_test_after_that_context(capsys, tiny):
    # llama-bench's -d: the tests run with depth tokens already in the cache (not timed)
    from kvant.runtime import Model
    from kvant.runtime.bench import run_bench
    m = Model(tiny, n_ctx=64, n_threads=1)
    result = run_bench(m, n_prompt=(8,), n_gen=4, depth=20)
    assert result["n_depth"] == 20 and result["pp_tok_s"]["8"] > 0 and result["tg_tok_s"] > 0
    assert len(m._tokens) == 20 + 1 + 4            # the last test: context, its first token, 4 generated
    code, out, err = run(capsys, "bench", tiny, "-p", "8", "-n", "2", "-d", "20", "-t", "1")
    assert code == 0, err
    assert "pp8 @ d20: " in out and "tg2 @ d20: " in out
    code, out, err = run(capsys, "bench", tiny, "-d", "-1")
    assert code == 2 and "-1" in err and len(err.strip().splitlines()) == 1


def test_generate_stats_line_on_stderr(capsys, tiny):
    code, out, err = run(capsys, "generate", tiny, "-p", "the the", "-n", "5", "--temp", "0", "-t", "1", "--stats")
    assert code == 0, err
    line = err.strip().splitlines()[-1]
    numbers = _numbers(line)
    assert numbers["prompt"] == numbers["prefilled"] > 0 and numbers["reused"] == 0
    assert 0 < numbers["generated"] <= 5
    assert numbers["prefill_s"] >= 0 and numbers["generation_s"] >= 0 and numbers["tok_s"] > 0
    code, plain, err = run(capsys, "generate", tiny, "-p", "the the", "-n", "5", "--temp", "0", "-t", "1")
    assert plain == out and "[prompt" not in err      # the text on stdout is the same with and without --stats


def bad_files(tmp_path, tiny):
    data = open(tiny, "rb").read()
    cases = {}
    cases["truncated"] = tmp_path / "truncated.gguf"
    cases["truncated"].write_bytes(data[:len(data) // 3])
    cases["header-cut"] = tmp_path / "header.gguf"
    cases["header-cut"].write_bytes(data[:40])
    cases["random"] = tmp_path / "random.gguf"
    cases["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    cases["empty"] = tmp_path / "empty.gguf"
    cases["empty"].write_bytes(b"")
    for name, patcher in {
        "unknown-type": lambda p: patch(p, tensor_info_offset(p, "blk.0.attn_q.weight") + 4 + 16,
                                        np.uint32(99).tobytes()),
        "offset-past-eof": lambda p: patch(p, tensor_info_offset(p, "blk.1.ffn_down.weight") + 4 + 16 + 4,
                                           np.uint64(1 << 40).tobytes()),
        # metadata that contradicts the tensors: kernels would read past rows (it corrupted the heap before)
        "ffn-length": lambda p: patch(p, metadata_value_offset(p, "llama.feed_forward_length"),
                                      np.uint32(D_FF - 32).tobytes()),
        "no-heads": lambda p: patch(p, metadata_value_offset(p, "llama.attention.head_count"),
                                    np.uint32(0).tobytes()),
    }.items():
        p = tmp_path / f"{name}.gguf"
        p.write_bytes(data)
        patcher(str(p))
        cases[name] = p
    cases["unsupported-arch"] = write_tiny_model(tmp_path / "mamba.gguf", arch="mamba")
    return {k: str(v) for k, v in cases.items()}


EXPECTED = {
    "truncated": "", "header-cut": "", "random": "", "empty": "",
    "unknown-type": "99", "offset-past-eof": "", "unsupported-arch": "mamba",
    "ffn-length": f"metadata implies [64, {D_FF - 32}]", "no-heads": "n_head = 0",
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_bad_model_file_one_line_error(capsys, tiny, tmp_path, case):
    path = bad_files(tmp_path, tiny)[case]
    code, out, err = run(capsys, "generate", path, "-p", "hi", "-n", "2")
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qrun: error: "), err
    assert "Traceback" not in err and out == ""
    assert EXPECTED[case] in lines[0]


@pytest.mark.parametrize("argv, needle", [
    (["generate", "no-such-model", "-p", "x"], "no-such-model"),
    (["generate", "smollm2", "-p", "x", "--temp", "-1"], "temperature"),
    (["generate", "-p"], "-p"),
    (["perplexity", "x.gguf"], "-f"),
    (["bench", "x.gguf", "-p", "128,abc"], "128,abc"),
    (["bench", "x.gguf", "-p", "0"], ">= 1"),
    (["nonsense"], "nonsense"),
])
def test_bad_arguments_one_line_error(capsys, argv, needle, tmp_path, monkeypatch):
    monkeypatch.setenv("KVANT_CACHE", str(tmp_path))    # never fetch anything in this test
    if "smollm2" in argv:
        from kvant.runtime.model_cache import cached_path
        cached_path("smollm2").parent.mkdir(parents=True)
        write_tiny_model(cached_path("smollm2"))
    code, out, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and needle in lines[0], err


def test_generate_stops_cleanly_at_the_end_of_the_context(capsys, tiny):
    code, out, err = run(capsys, "generate", tiny, "-p", "the the the", "-n", "200", "-c", "8", "--temp", "0",
                         "-t", "1")
    assert code == 0, err
    assert "Traceback" not in err and (err == "" or "end of the context" in err)


def test_prompt_that_is_not_utf8_is_one_line(capsys, tiny):
    code, out, err = run(capsys, "generate", tiny, "-p", "\udcff hi", "-n", "2")   # argv byte 0xff, as Python sees it
    assert code == 1 and out == "" and err.count("\n") == 1 and "UTF-8" in err, err


def test_console_script_bad_file_no_traceback(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    r = subprocess.run([sys.executable, "-m", "kvant.runtime.cli", "generate", str(bad), "-p", "x"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "KVANT_CACHE": str(tmp_path)})
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr, r.stderr


def test_chat_two_turns_through_stdin_reuses_cache(tiny, tmp_path):
    r = subprocess.run([sys.executable, "-m", "kvant.runtime.cli", "chat", tiny, "--stats", "--temp", "0", "-n", "6",
                        "-t", "1"], input="hello there\nand again\n/exit\nnot read\n", capture_output=True,
                       text=True, timeout=300, env={**os.environ, "KVANT_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    stats = [line for line in r.stderr.splitlines() if line.startswith("[prompt")]
    assert len(stats) == 2, r.stderr
    first, second = (_numbers(s) for s in stats)
    assert first["reused"] == 0 and first["prefilled"] == first["prompt"]
    # the first turn's prompt comes from the cache (a random model's answer may not re-tokenize to the same ids;
    # the real-model tier checks that the answer is reused too)
    assert second["reused"] >= first["prompt"]
    assert second["prefilled"] == second["prompt"] - second["reused"]


def _numbers(line):
    # "[prompt 45 tokens: 30 reused, 15 prefilled; 20 generated, 35.2 tok/s; prefill 0.041 s, generation 0.568 s]"
    words = line.replace("[", " ").replace(",", " ").replace(";", " ").replace(":", " ").split()
    return {"prompt": int(words[1]), "reused": int(words[3]), "prefilled": int(words[5]),
            "generated": int(words[7]), "tok_s": float(words[9]), "prefill_s": float(words[12]),
            "generation_s": float(words[15])}


def test_chat_line_that_is_not_utf8_is_reported_and_the_chat_goes_on(tiny, tmp_path):
    r = subprocess.run([sys.executable, "-m", "kvant.runtime.cli", "chat", tiny, "--stats", "--temp", "0", "-n", "4",
                        "-t", "1"], input=b"\xff\xfe hello\nhello there\n/exit\n", capture_output=True,
                       timeout=300, env={**os.environ, "KVANT_CACHE": str(tmp_path)})
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert "not valid UTF-8" in err and "Traceback" not in err
    assert sum(line.startswith("[prompt") for line in err.splitlines()) == 1     # the second line was answered


def test_chat_template_file_replaces_the_files(tiny, tmp_path):
    """--chat-template FILE (llama.cpp's --chat-template-file) and the API's chat_template= render the prompt."""
    from kvant.runtime import Model
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}[bot]", encoding="utf-8")
    with Model(tiny, n_threads=1, chat_template=tpl.read_text(encoding="utf-8")) as m:
        assert m.template.render([{"role": "user", "content": "hi"}]) == "[user]hi[bot]"
        assert m.template_note is None
        answer = m.chat([{"role": "user", "content": "hi"}], max_tokens=3, temperature=0)
    r = subprocess.run([sys.executable, "-m", "kvant.runtime.cli", "chat", tiny, "--chat-template", str(tpl),
                        "--temp", "0", "-n", "3", "-t", "1"], input="hi\n/exit\n", capture_output=True, text=True,
                       timeout=300, env={**os.environ, "KVANT_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(answer)
    r = subprocess.run([sys.executable, "-m", "kvant.runtime.cli", "chat", tiny, "--chat-template",
                        str(tmp_path / "missing.jinja")], input="", capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "missing.jinja" in r.stderr and "Traceback" not in r.stderr
