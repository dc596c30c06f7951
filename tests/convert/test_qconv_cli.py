"""qconv's command line: bad input gets one line on stderr, a non-zero exit and no output file; inspect; imatrix."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_helpers import HF, f32_files  # noqa: F401 (a fixture)
from kvant.convert import codec
from kvant.convert.cli import main


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def leftovers(directory):
    return [f for f in os.listdir(directory) if f.endswith(".part")]


def assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("qconv: error: ")
    for n in needles:
        assert n in lines[0], lines[0]


def broken_copy(tmp_path, name="qwen3"):
    d = tmp_path / "model"
    shutil.copytree(os.path.join(HF, name), d)
    for f in d.iterdir():
        f.chmod(0o644)
    return d


def test_directory_without_config(tmp_path, capsys):
    d = broken_copy(tmp_path)
    (d / "config.json").unlink()
    out = tmp_path / "o.gguf"
    code, _, err = run(["to-gguf", str(d), "-o", str(out)], capsys)
    assert_one_line_error(code, err, "no config.json")
    assert not out.exists() and not leftovers(tmp_path)


def test_unsupported_architecture_is_named(tmp_path, capsys):
    d = broken_copy(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["FalconMambaForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "o.gguf"
    code, _, err = run(["to-gguf", str(d), "-o", str(out)], capsys)
    assert_one_line_error(code, err, "FalconMambaForCausalLM", "LlamaForCausalLM")
    assert not out.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("key, value, needle", [
    ("hidden_size", 320, "metadata implies"),
    ("vocab_size", 1000, "metadata implies"),
    ("num_attention_heads", 0, "n_head = 0"),
])
def test_config_that_contradicts_the_tensors(tmp_path, capsys, key, value, needle):
    """llama.cpp's converter writes such a file and its loader refuses it ("wrong shape"); qconv refuses first."""
    d = broken_copy(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg[key] = value
    (d / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "o.gguf"
    code, _, err = run(["to-gguf", str(d), "-o", str(out), "-t", "Q8_0"], capsys)
    assert_one_line_error(code, err, "config.json does not match the checkpoint", needle)
    assert not out.exists() and not leftovers(tmp_path)


def test_truncated_shard(tmp_path, capsys):
    d = broken_copy(tmp_path)
    st = d / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    out = tmp_path / "o.gguf"
    code, _, err = run(["to-gguf", str(d), "-o", str(out), "-t", "Q8_0"], capsys)
    assert_one_line_error(code, err, "truncated", "model.safetensors")
    assert not out.exists() and not leftovers(tmp_path)


def test_truncated_safetensors_header(tmp_path, capsys):
    d = broken_copy(tmp_path)
    (d / "model.safetensors").write_bytes(b"\x10\x00")
    code, _, err = run(["to-gguf", str(d), "-o", str(tmp_path / "o.gguf")], capsys)
    assert_one_line_error(code, err, "truncated")


def test_unknown_type_lists_valid_ones(tmp_path, capsys):
    out = tmp_path / "o.gguf"
    code, _, err = run(["to-gguf", os.path.join(HF, "qwen3"), "-o", str(out), "-t", "Q4_Z"], capsys)
    assert_one_line_error(code, err, "Q4_Z", "Q4_K_M", "TQ2_0", "F16")
    assert not out.exists()


def test_unknown_tensor_type_override(tmp_path, capsys):
    code, _, err = run(["to-gguf", os.path.join(HF, "qwen3"), "-o", str(tmp_path / "o.gguf"),
                        "--tensor-type", "ffn_down=Q9_K"], capsys)
    assert_one_line_error(code, err, "Q9_K", "Q4_K")


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "o.gguf"
    out.write_bytes(b"keep me")
    code, _, err = run(["to-gguf", os.path.join(HF, "qwen3"), "-o", str(out)], capsys)
    assert_one_line_error(code, err, "exists", "--force")
    assert out.read_bytes() == b"keep me" and not leftovers(tmp_path)
    code, _, err = run(["to-gguf", os.path.join(HF, "qwen3"), "-o", str(out), "--force", "-t", "F16"], capsys)
    assert code == 0, err
    assert out.read_bytes()[:4] == b"GGUF"


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory no new file can be made in: one without write permission, or, for root (who writes anywhere),
    the read-only /sys of a container."""
    for candidate in (tmp_path / "read-only", "/sys"):
        if candidate != "/sys":
            candidate.mkdir()
            candidate.chmod(0o555)
        try:
            tempfile.TemporaryFile(dir=candidate).close()
        except OSError:
            yield str(candidate)
            break
    else:
        pytest.skip("no unwritable directory here: this user writes in a 0o555 directory and in /sys")
    (tmp_path / "read-only").chmod(0o755)


@pytest.mark.parametrize("command", [["to-gguf", os.path.join(HF, "qwen3"), "-o"], ["imatrix", "x.gguf", "-o"],
                                     ["quantize", "x.gguf"]])
def test_an_unwritable_output_is_refused_before_the_work(unwritable_dir, tmp_path, capsys, command):
    from tiny_model import write_tiny_model
    write_tiny_model(tmp_path / "x.gguf")
    command = [str(tmp_path / a) if a == "x.gguf" else a for a in command]
    argv = command + [os.path.join(unwritable_dir, "o.gguf")] + (["Q4_0"] if command[0] == "quantize" else [])
    if command[0] == "imatrix":
        argv += ["-f", __file__]
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, "cannot write to the output directory", unwritable_dir)


def test_missing_tokenizer(tmp_path, capsys):
    d = broken_copy(tmp_path)
    (d / "tokenizer.json").unlink()
    code, _, err = run(["to-gguf", str(d), "-o", str(tmp_path / "o.gguf")], capsys)
    assert_one_line_error(code, err, "tokenizer")
    assert not leftovers(tmp_path)


def test_failure_mid_write_leaves_nothing(tmp_path, capsys, monkeypatch):
    calls = []
    real = codec.quantize

    def failing(x, t, imatrix=None):
        calls.append(t)
        if len(calls) == 5:
            raise MemoryError("simulated failure while writing")
        return real(x, t, imatrix)
    monkeypatch.setattr(codec, "quantize", failing)
    out = tmp_path / "o.gguf"
    code, _, err = run(["to-gguf", os.path.join(HF, "qwen3"), "-o", str(out), "-t", "F16"], capsys)
    assert_one_line_error(code, err, "simulated failure")
    assert not out.exists() and not leftovers(tmp_path)


def test_default_output_name_and_type(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["to-gguf", os.path.join(HF, "llama")], capsys)
    assert code == 0, err
    assert (tmp_path / "llama-BF16.gguf").exists()  # bf16 weights -> BF16, as llama.cpp's --outtype auto


def test_subprocess_qconv(tmp_path):
    exe = shutil.which("qconv")
    cmd = [exe] if exe else [sys.executable, "-m", "kvant.convert.cli"]
    bad = subprocess.run(cmd + ["to-gguf", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o.gguf")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "nowhere" in bad.stderr
    good = subprocess.run(cmd + ["to-gguf", os.path.join(HF, "qwen2"), "-o", str(tmp_path / "q.gguf"), "-t", "F16"],
                          capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "q.gguf").exists()


# ---------------------------------------------------------------- quantize command errors
def test_quantize_refuses_requantizing_without_the_flag(tmp_path, capsys, f32_files):
    q8 = tmp_path / "q8.gguf"
    assert run(["quantize", f32_files["qwen3"], str(q8), "Q8_0"], capsys)[0] == 0
    out = tmp_path / "f16.gguf"
    code, _, err = run(["quantize", str(q8), str(out), "F16"], capsys)
    assert_one_line_error(code, err, "Q8_0", "--allow-requantize")
    assert not out.exists() and not leftovers(tmp_path)
    code, _, err = run(["quantize", str(q8), str(out), "F16", "--allow-requantize"], capsys)
    assert code == 0, err


def test_quantize_bad_input_file(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 10)
    code, _, err = run(["quantize", str(bad), str(tmp_path / "o.gguf"), "Q8_0"], capsys)
    assert_one_line_error(code, err)
    assert not (tmp_path / "o.gguf").exists()


# ---------------------------------------------------------------- inspect
def test_inspect_text_and_json(capsys, f32_files):
    code, out, err = run(["inspect", f32_files["gemma3"]], capsys)
    assert code == 0, err
    assert "gemma3.attention.sliding_window_pattern" in out and "blk.1.attn_q.weight" in out
    assert "[512 items]" in out
    code, out, err = run(["inspect", "--json", f32_files["gemma3"]], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["metadata"]["general.architecture"] == "gemma3"
    t = {x["name"]: x for x in d["tensors"]}
    assert t["blk.0.attn_q.weight"] == {**t["blk.0.attn_q.weight"], "shape": [256, 256], "type": "F32",
                                        "bytes": 262144}
    assert d["metadata"]["tokenizer.ggml.tokens"]["count"] == 512


def test_inspect_json_is_strict_with_a_nan_value(tmp_path, capsys, f32_files):
    from tiny_model import metadata_value_offset, patch
    path = tmp_path / "nan.gguf"
    shutil.copy(f32_files["gemma3"], path)
    patch(str(path), metadata_value_offset(str(path), "gemma3.attention.layer_norm_rms_epsilon"),
          np.float32(np.nan).tobytes())
    code, out, err = run(["inspect", "--json", str(path)], capsys)
    assert code == 0, err
    d = json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    assert d["metadata"]["gemma3.attention.layer_norm_rms_epsilon"] == "nan"


# ---------------------------------------------------------------- importance matrices
def write_legacy_imatrix(path, entries, chunks=7, dataset="corpus.txt"):
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(entries)))
        for name, (ncall, values) in entries.items():
            b = name.encode()
            f.write(struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, len(values)))
            f.write(np.asarray(values, dtype="<f4").tobytes())
        f.write(struct.pack("<i", chunks) + struct.pack("<i", len(dataset)) + dataset.encode())


def test_read_legacy_imatrix(tmp_path):
    from kvant.convert.imatrix import read_imatrix
    p = str(tmp_path / "imatrix.dat")
    write_legacy_imatrix(p, {"blk.0.attn_q.weight": (4, [4.0, 8.0, 2.0]), "blk.0.ffn_up.weight": (0, [1.5, 2.5])})
    im = read_imatrix(p)
    assert im.legacy and im.chunk_count == 7 and im.datasets == ["corpus.txt"]
    np.testing.assert_array_equal(im.values["blk.0.attn_q.weight"], [1.0, 2.0, 0.5])
    np.testing.assert_array_equal(im.values["blk.0.ffn_up.weight"], [1.5, 2.5])


def test_read_gguf_imatrix(tmp_path):
    import gguf
    from kvant.convert.imatrix import read_imatrix
    p = str(tmp_path / "imatrix.gguf")
    w = gguf.GGUFWriter(p, arch="llama")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["en.txt"])
    w.add_uint32("imatrix.chunk_count", 3)
    w.add_uint32("imatrix.chunk_size", 512)
    w.add_tensor("blk.0.attn_q.weight.in_sum2", np.array([[10.0, 20.0, 30.0, 40.0]], dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight.counts", np.array([[10.0]], dtype=np.float32))
    w.add_tensor("blk.0.ffn_up_exps.weight.in_sum2", np.array([[2.0, 4.0], [6.0, 8.0]], dtype=np.float32))
    w.add_tensor("blk.0.ffn_up_exps.weight.counts", np.array([[2.0], [0.0]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    im = read_imatrix(p)
    assert not im.legacy and im.chunk_count == 3 and im.chunk_size == 512 and im.datasets == ["en.txt"]
    np.testing.assert_array_equal(im.values["blk.0.attn_q.weight"], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(im.values["blk.0.ffn_up_exps.weight"], [1.0, 2.0, 1.0, 1.0])


def test_bad_imatrix_is_one_line(tmp_path, capsys):
    bad = tmp_path / "imatrix.dat"
    bad.write_bytes(struct.pack("<i", 3) + b"\x05\x00")
    code, _, err = run(["to-gguf", os.path.join(HF, "qwen3"), "-o", str(tmp_path / "o.gguf"), "-t", "Q8_0",
                        "--imatrix", str(bad)], capsys)
    assert_one_line_error(code, err, "imatrix")
