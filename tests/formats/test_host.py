"""Which kernel path a CPU gets: the best its features allow, or the forced one if it can run it."""
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
