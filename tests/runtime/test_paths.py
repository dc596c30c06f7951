"""Every kernel path this CPU can execute runs the whole models, not only the path chosen for it.

A process uses one path (formats/host.py picks the best, KVANT_CPU_PATH forces another), so the other paths run
here in a child pytest each, forced, over the model-level tests: the real models against llama.cpp's stored logits,
tokens and perplexities, the six converted architectures against transformers' logits, prefill against decode, and
every type's kernels, and a NaN weight reaching the sampler's check through a whole model (on an AVX2 machine the
other path is the float fallback; on an AVX-512 VNNI one, AVX-VNNI where the CPU has it, AVX2 and float). The integer
paths' whole-model logits are compared with this process's.
"""
import functools
import os
import subprocess
import sys

import numpy as np
import pytest

from kvant.formats.host import CPU_PATH, runnable_paths

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL_TESTS = ["tests/runtime/test_real_models.py", "tests/convert/test_convert_runtime.py",
               "tests/runtime/test_prefill.py", "tests/runtime/test_kernels.py",
               "tests/runtime/test_api_edges.py::test_a_nan_weight_reaches_the_samplers_check"]
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


INTEGER_PATHS = [path for path in OTHER_PATHS if path != "float"]


@pytest.mark.realmodel
@pytest.mark.skipif(CPU_PATH == "float", reason="the float path sums in float: the next layer's 8-bit rounding "
                                                 "amplifies its last bits, so its logits are not the integer paths'")
@pytest.mark.parametrize("path", INTEGER_PATHS)
@pytest.mark.parametrize("name", ["smollm2", "gemma3-270m"])
def test_integer_paths_give_the_same_logits(path, name, request, tmp_path):
    """Every integer path computes the same int8 activations and exact int32 block sums, in prefill and in decode;
    only the float steps after them (block scales, norms) could be summed in another order. A last-bit difference
    there is amplified by the next layer's 8-bit rounding (the float path, which sums the same rounded products in
    float, lands 7% of the range away on SmolLM2, as a 1e-6 change of the input does: test_real_models), so this
    bound is a tripwire for bit-identity: on the Xeon (avx512vnni, avxvnni, avx2) the logits are bit-identical. So the
    forced path compiles here with this CPU's own features (NUMBA_CPU_FEATURES, which host.forced_features leaves
    alone): only the integer kernels differ. Compiled without the better paths' features, as a forced path otherwise
    is, the float steps vectorize differently (gemma-3-270m's decode logits then move by up to 2.4% of their range
    on avx2); that code is held to llama.cpp's figures by test_model_tests_pass_on_every_other_path. The float path
    is held to llama.cpp's figures too."""
    from numba.core.codegen import get_host_cpu_features
    model = request.getfixturevalue("smollm2_path" if name == "smollm2" else "gemma3_path")
    out = tmp_path / "logits.npy"
    env = {**os.environ, "KVANT_CPU_PATH": path, "NUMBA_CPU_FEATURES": get_host_cpu_features()}
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "path_logits.py"), model, str(out)],
                       env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    ours, theirs = _own_logits(model), np.load(out)
    share = np.abs(ours - theirs).max(axis=1) / (ours.max(axis=1) - ours.min(axis=1))
    assert share.max() < 1e-4, (path, share.max())


@functools.lru_cache(maxsize=None)
def _own_logits(model_path):
    """path_logits' logits on this process's path, once per model."""
    from path_logits import logits
    return logits(model_path)
