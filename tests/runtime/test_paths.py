"""Every kernel path this CPU can execute runs the whole models, not only the path chosen for it.

A process uses one path (formats/host.py picks the best, KVANT_CPU_PATH forces another), so the other paths run
here in a child pytest each, forced, over the model-level tests: the real models against llama.cpp's stored logits,
tokens and perplexities, the six converted architectures against transformers' logits, prefill against decode, and
every type's kernels. On an AVX2 machine that is the float fallback; on an AVX-512 VNNI one, AVX2 and float.
"""
import os
import subprocess
import sys

import pytest

from kvant.formats.host import CPU_PATH, runnable_paths

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_TESTS = ["tests/runtime/test_real_models.py", "tests/convert/test_convert_runtime.py",
               "tests/runtime/test_prefill.py", "tests/runtime/test_kernels.py"]
FORCED = os.environ.get("KVANT_CPU_PATH")
OTHER_PATHS = [path for path in runnable_paths() if path != CPU_PATH]


@pytest.mark.skipif(bool(FORCED), reason="a run on a forced path does not start the other paths' runs")
@pytest.mark.parametrize("path", OTHER_PATHS)
def test_model_tests_pass_on_every_other_path(path):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *MODEL_TESTS],
                       cwd=ROOT, env={**os.environ, "KVANT_CPU_PATH": path}, capture_output=True, text=True,
                       timeout=3600)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:]
    assert r.returncode == 0, f"KVANT_CPU_PATH={path}: {summary}\n{r.stdout[-6000:]}"
    assert " passed" in summary and " failed" not in summary, summary
