"""Which kernel path a CPU gets: the best its features allow, or the forced one if it can run it."""
import os
import subprocess
import sys

import pytest

from kvant.formats import host

ZEN3 = frozenset({"avx2", "fma", "f16c", "sse4.2"})
SAPPHIRE_RAPIDS = ZEN3 | {"avx512f", "avx512bw", "avx512vl", "avx512vnni", "avxvnni"}
GRAVITON2 = frozenset({"neon", "fp-armv8", "dotprod", "crc"})
GRAVITON3 = GRAVITON2 | {"i8mm", "sve", "bf16"}
CORTEX_A53 = frozenset({"neon", "fp-armv8", "crc"})        # Raspberry Pi 3: no dot product


@pytest.mark.parametrize("features, best, runnable", [
    (SAPPHIRE_RAPIDS, "avx512vnni", ("avx512vnni", "avxvnni", "avx2", "float")),
    (ZEN3, "avx2", ("avx2", "float")),
    (GRAVITON3, "i8mm", ("i8mm", "dotprod", "float")),
    (GRAVITON2, "dotprod", ("dotprod", "float")),
    (CORTEX_A53, "float", ("float",)),
    (frozenset(), "float", ("float",)),
])
def test_the_best_path_the_features_allow(features, best, runnable):
    assert host.runnable_paths(features) == runnable
    assert host.choose_path(None, features) == best


def test_a_forced_path_is_taken_only_if_the_cpu_can_run_it():
    assert host.choose_path("DotProd ", GRAVITON3) == "dotprod"
    with pytest.raises(host.HostPathError, match="cannot execute it.*i8mm, dotprod, float"):
        host.choose_path("avx2", GRAVITON3)
    with pytest.raises(host.HostPathError, match="not a kernel path"):
        host.choose_path("sve2", GRAVITON3)


@pytest.mark.parametrize("answers, features", [
    ({"FEAT_DotProd": "1", "FEAT_I8MM": "0"}, {"neon", "dotprod"}),                    # M1
    ({"FEAT_DotProd": "1", "FEAT_I8MM": "1"}, {"neon", "dotprod", "i8mm"}),            # M2 and later
    ({"FEAT_DotProd": "", "FEAT_I8MM": ""}, {"neon"}),                                 # sysctl knows neither
])
def test_apple_silicon_features_come_from_sysctl_when_llvm_reports_none(answers, features):
    assert host._apple_arm_features(answers.__getitem__) == features


def test_every_path_host_can_choose_has_its_kernel_steps():
    from kvant.runtime.kernels._isa import KERNEL_PATHS
    assert set(KERNEL_PATHS) == set(host.PATHS)
    assert KERNEL_PATHS["float"] is None and all(KERNEL_PATHS[p] for p in host.PATHS if p != "float")


@pytest.mark.parametrize("path, features, dropped", [
    ("avx2", SAPPHIRE_RAPIDS, ("avx512f", "avxvnni")),
    ("avxvnni", SAPPHIRE_RAPIDS, ("avx512f",)),
    ("dotprod", GRAVITON3, ("i8mm",)),
    ("avx2", ZEN3, None),               # nothing of a better path to take away
    ("avx512vnni", SAPPHIRE_RAPIDS, None),
])
def test_a_forced_path_compiles_without_the_better_paths_features(path, features, dropped):
    """A forced AVX2 run on an AVX-512 CPU must not compile with AVX-512's registers and opmasks: the host's features
    (absent ones named absent, as numba's own string does), the dropped ones last, where no later "+" of a feature
    that depends on them turns them on again."""
    host_map = {**dict.fromkeys(features, True), "amx-tile": False, "sse4a": False}
    got = host.forced_features(path, host_map)
    if dropped is None:
        assert got is None
        return
    flags = got.split(",")
    assert flags[-len(dropped):] == [f"-{f}" for f in dropped]
    assert {f for f in flags if f.startswith("+")} == {f"+{f}" for f in features if f not in dropped}
    assert {"-amx-tile", "-sse4a"} <= set(flags)
    assert max(i for i, f in enumerate(flags) if f.startswith("+")) < min(i for i, f in enumerate(flags)
                                                                          if f.startswith("-"))


def test_the_forced_features_are_what_numba_compiles_with():
    """In a process forced to a lower path than this CPU's best, numba's target machine lacks the better paths'
    features, also when the runtime is imported first (the kernels' tests and benches run forced paths so); the
    CPU's own best path, forced or not, compiles with the host's features."""
    below = [p for p in host.runnable_paths()[1:] if p != "float" and host.WITHOUT.get(p)
             and any(f in host.host_features() for f in host.WITHOUT[p])]
    if not below:
        pytest.skip(f"this CPU's best path ({host.runnable_paths()[0]}) has no lower path with fewer features")
    code = ("import numba, kvant.runtime.model, kvant.formats.host as h; from numba.core.registry import cpu_target; "
            "numba.njit(lambda: 0)(); print(cpu_target.target_context.codegen()._tm_features, h.FORCED_WITHOUT)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU", "KVANT_CPU_PATH"))}
    forced = subprocess.run([sys.executable, "-c", code], env={**env, "KVANT_CPU_PATH": below[0]}, check=True,
                            capture_output=True, text=True).stdout.split()
    host_map = {k: bool(v) for k, v in host.binding.get_host_cpu_features().items()}
    assert forced[0] == host.forced_features(below[0], host_map)
    assert f"-{host.WITHOUT[below[0]][0]}" in forced[0].split(",") and forced[1] != "()"
    best = subprocess.run([sys.executable, "-c", code], env={**env, "KVANT_CPU_PATH": host.runnable_paths()[0]},
                          check=True, capture_output=True, text=True).stdout.split()
    assert best[1] == "()" and f"+{host.WITHOUT[below[0]][0]}" in best[0].split(",")
