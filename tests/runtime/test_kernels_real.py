"""Kernels on real tensors (the realmodel tier): every matrix type found in SmolLM2-135M Q4_1 and gemma-3-270m
Q4_K_M (Q4_1, Q8_0, Q4_K, Q5_0, Q6_K), and in the K-quant SmolLM2 files that bench/ keeps when they are there, a
slice of rows each, against the gguf oracle."""
from pathlib import Path

import numpy as np
import pytest
from gguf.quants import dequantize
from gguf import GGMLQuantizationType

from kvant.formats.gguf_file import GGUFFile
from kvant.runtime.kernels import prepare

pytestmark = pytest.mark.realmodel


def check_file(path, rows=64):
    rng = np.random.default_rng(0)
    seen = set()
    with GGUFFile(path) as f:
        for name, info in f.tensors.items():
            tname = info.ggml_type.name
            if len(info.shape) != 2 or tname in seen:
                continue
            seen.add(tname)
            raw = f.raw(name)[:rows]
            w = dequantize(np.ascontiguousarray(raw), GGMLQuantizationType[tname]).astype(np.float64)
            qm = prepare(raw, tname)
            x = rng.standard_normal((5, w.shape[1])).astype(np.float32)
            out = np.empty(raw.shape[0], np.float32)
            qm.matvec(out, x[0])
            # integer (VNNI) kernels quantize x first as llama.cpp does; Q4_1's min term uses Q8_1's fp16 sums
            rounding = qm.layout.matvec_rounds_x
            xv = x[:1].copy()
            if rounding is not None:
                rounding(xv, x[:1])
            tolerance = 1e-3 if rounding is not None and tname == "Q4_1" else 1e-4
            bound = np.abs(w) @ np.abs(xv[0]) + 1e-30
            assert (np.abs(out - w @ xv[0]) / bound).max() < tolerance, (name, tname)
            outs = np.empty((5, raw.shape[0]), np.float32)
            qm.matmul(outs, x)
            bound = np.abs(x) @ np.abs(w).T + 1e-30
            assert (np.abs(outs - x @ w.T) / bound).max() < 1e-4, (name, tname)
    return seen


def test_smollm2_tensors(smollm2_path):
    assert check_file(smollm2_path) >= {"Q4_1", "Q8_0"}


def test_gemma3_tensors(gemma3_path):
    assert check_file(gemma3_path) >= {"Q4_K", "Q5_0", "Q6_K", "Q8_0"}


BENCH_FILES = Path(__file__).resolve().parents[2] / "bench" / ".work"


# SmolLM2's rows of 576 are no multiple of 256: only ffn_down (1536) and some others get a K type
@pytest.mark.parametrize("name, types", [
    ("SmolLM2-135M-Instruct-Q2_K", {"Q3_K"}), ("SmolLM2-135M-Instruct-Q3_K_M", {"Q4_K", "Q5_K"}),
    ("SmolLM2-135M-Instruct-Q4_K_M", {"Q4_K", "Q6_K"}), ("SmolLM2-135M-Instruct-Q5_K_M", {"Q5_K", "Q6_K"}),
    ("SmolLM2-135M-Instruct-Q6_K", {"Q6_K"}), ("tinyllama-1.1B-random-Q4_K_M", {"Q4_K", "Q6_K"})])
def test_k_quant_files(name, types):
    path = BENCH_FILES / f"{name}.gguf"
    if not path.exists():
        pytest.skip(f"{path} not here (bench/ makes it)")
    assert check_file(path) >= types
