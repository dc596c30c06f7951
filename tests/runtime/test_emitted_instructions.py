"""Each x86 kernel path, compiled for a named CPU that has it, emits the instructions it is written for.

A machine runs the paths it can execute (test_paths.py); the others are compiled here for a CPU that has them
(NUMBA_CPU_NAME and NUMBA_CPU_FEATURES, in a child process: emitted_instructions.py) and their matvec kernels' assembly
is read, never run. The avx512vnni path on Sapphire Rapids: vpdpbusd on zmm registers in every type but the IQ1-IQ2
lattice types, which run llama.cpp's AVX2 step on every x86 path (vpsignb, vpmaddubsw, vpmaddwd by the scales; the IQ3
types are repacked to codes of a 16-value codebook, as IQ4_XS). The avxvnni path on Alder Lake: AVX-VNNI's VEX-encoded
vpdpbusd on ymm where the kernel's dot step is one (the 32-block types, IQ4_XS, the K-quant row kernels, the ternary
types), and no zmm register anywhere (Alder Lake has no AVX-512); the kernels written for 256-bit registers with
vpmaddubsw sums kept in i16 (_avx2.py: Q4_K, Q6_K) are AVX2 instructions, which every AVX-VNNI CPU has. The avx2 path on
Zen 3: vpmaddubsw, no vpdpbusd, no zmm. The AArch64 paths, compiled for that architecture from this one
(emitted_instructions.py says how): i8mm on Apple M2 usdot in every type (sdot in the lattice types, whose weights are
signed) and usmmla, the int8 matrix multiply, in every prefill GEMM; dotprod on Apple M1 sdot; the IQ4 codebook looked
up (IQ4 and IQ3) by tbl. The HIGGS types: on x86 their grid points looked up by vpshufb (HG4's symmetric half, negated
by vpsignb) times int8 x by vpmaddubsw (AVX-VNNI: vpdpbusd), except on the avx512vnni path of a CPU with AVX-512 VBMI
(Sapphire Rapids has it), where vpermi2b / vpermb look the grid's bytes up and vpdpbusd multiplies them.
"""
import json
import os
import pickle
import subprocess
import sys

import numba
import numpy as np
import pytest

from kvant.runtime.kernels import prepare
from kvant.runtime.kernels._isa import INT_KERNELS

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_kernels import FP16_FIELDS, make_weight  # noqa: E402

INT_TYPES = sorted(FP16_FIELDS)
OWN_256_BIT = {"Q4_K", "Q6_K"}    # _avx2.py's kernels, on both 256-bit paths
IQ4 = {"IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_S"}      # 16-value codebooks (the IQ3 types repacked to IQ4_XS's layout)
LATTICE = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S"}  # llama.cpp's AVX2 step on every x86 path
AARCH64 = "aarch64-unknown-linux-gnu"
TARGETS = {     # path: (CPU, the features the path needs as NUMBA_CPU_FEATURES, the target triple or None: this one)
    "avx512vnni": ("sapphirerapids", "+avx512f,+avx512bw,+avx512vl,+avx512vnni,+avx512vbmi,+avx2,+fma,+f16c", None),
    "avxvnni": ("alderlake", "+avxvnni,+avx2,+fma,+f16c", None),
    "avx2": ("znver3", "+avx2,+fma,+f16c", None),
    "i8mm": ("apple-m2", "+neon,+dotprod,+i8mm", AARCH64),
    "dotprod": ("apple-m1", "+neon,+dotprod", AARCH64),
}
ARM_DOT = {"i8mm": ("usdot", "sdot"), "dotprod": ("sdot", "usdot")}    # path: (its dot product, the other one)


def expectations(path, name, found):
    """The instructions a type's matvec must show on a path: a list of (what, holds)."""
    if path in ARM_DOT and name in LATTICE:     # signed weights times signed activations on both ARM paths
        return [("sdot", found["sdot"] > 0)]
    if path in ARM_DOT:
        used, other = ARM_DOT[path]
        checks = [(used, found[used] > 0), (f"no {other}", found[other] == 0)]
        return checks + [("tbl", found["tbl"] > 0)] if name in IQ4 else checks
    if path == "avx512vnni" and name in LATTICE:     # vpsignb, vpmaddubsw, and LLVM's vpdpwssd for the scales
        return [("vpmaddubsw", found["vpmaddubsw"] > 0), ("no vpdpbusd", found["vpdpbusd"] == 0)]
    if path == "avx512vnni":
        return [("vpdpbusd", found["vpdpbusd"] > 0), ("zmm registers", found["zmm"] > 0),
                ("no vpmaddubsw", found["vpmaddubsw"] == 0)]
    checks = [("no zmm register", found["zmm"] == 0)]
    if path == "avxvnni" and name not in OWN_256_BIT | LATTICE:
        return checks + [("{vex} vpdpbusd", found["{vex} vpdpbusd"] > 0),
                         ("only the VEX vpdpbusd", found["vpdpbusd"] == found["{vex} vpdpbusd"])]
    return checks + [("vpmaddubsw", found["vpmaddubsw"] > 0), ("no vpdpbusd", found["vpdpbusd"] == 0)]


HIGGS_TYPES = ("HG2", "HG3", "HG4")
HIGGS_GEMM = "kvant.runtime.kernels.higgs._gemm_"        # + the layout kind: its integer prefill


def higgs_expectations(path, kind, name, found):
    """The HIGGS matvec's instructions for the layout kind in force."""
    if kind == "lookup":    # 256 points: a vpermi2b a coordinate (LLVM may write either operand order) over half the
        # grid, and the byte negated by a masked vpsubb where the code's top bit is set (the grid is symmetric)
        permute = found["vpermi2b"] + found["vpermt2b"] if name == "HG4" else found["vpermb"]
        negate = [("masked vpsubb", found["masked vpsubb"] > 0)] if name == "HG4" else []
        return [("vpermi2b / vpermb", permute > 0), ("vpdpbusd", found["vpdpbusd"] > 0),
                ("no vpgatherdd", found["vpgatherdd"] == 0)] + negate
    # vpshufb tables, no gather, times int8 x by llama.cpp's AVX2 step (vpsignb, then vpmaddubsw, or AVX-VNNI's
    # vpdpbusd in its place); 256 points: half the grid, negated by a second vpsignb where the code's top bit is set
    dot = ([("{vex} vpdpbusd", found["{vex} vpdpbusd"] > 0), ("no vpmaddubsw", found["vpmaddubsw"] == 0)]
           if path == "avxvnni" else [("vpmaddubsw", found["vpmaddubsw"] > 0)])
    return [("vpshufb", found["vpshufb"] > 0), ("vpsignb", found["vpsignb"] > 0),
            ("no vpgatherdd", found["vpgatherdd"] == 0)] + dot


def gemm_expectations(path, where, found):
    """The instructions every prefill GEMM must show on a path (the lattice types' too: their tiles are 8-bit codes)."""
    if path == "i8mm":      # the int8 matrix multiply, no dot product
        return [("usmmla", found["usmmla"] > 0), ("no sdot or usdot", found["sdot"] + found["usdot"] == 0)]
    if path in ARM_DOT:
        return [("sdot", found["sdot"] > 0), ("no usmmla", found["usmmla"] == 0)]
    if path == "avx512vnni":
        return [("vpdpbusd", found["vpdpbusd"] > 0), ("zmm registers", found["zmm"] > 0)]
    checks = [("no zmm register", found["zmm"] == 0)]
    if path == "avxvnni":
        return checks + [("{vex} vpdpbusd", found["{vex} vpdpbusd"] > 0)]
    return checks + [("vpmaddubsw", found["vpmaddubsw"] > 0), ("no vpdpbusd", found["vpdpbusd"] == 0)]


def _gemm_kernels():
    """{module.function: its compiled argument types} of the kernel modules' integer GEMM drivers: named *gemm*,
    called with int8 activation codes (the float GEMM's helpers, which other tests of the session may have compiled,
    take floats)."""
    from numba import types
    from numba.core.registry import CPUDispatcher
    found = {}
    for module_name, module in list(sys.modules.items()):
        # HIGGS's GEMMs depend on the layout kind: the fixture gives their types (higgs_gemm)
        if not module_name.startswith("kvant.runtime.kernels") or module is None or module_name.endswith(".higgs"):
            continue
        for name, value in vars(module).items():
            if not (isinstance(value, CPUDispatcher) and "gemm" in name and value.__module__ == module_name):
                continue
            sigs = [sig for sig in value.signatures
                    if any(isinstance(t, types.Array) and t.dtype == types.int8 for t in sig)]
            if sigs:
                found[f"{module_name}.{name}"] = sigs
    return found


@pytest.fixture(scope="module")
def signatures(tmp_path_factory):
    """Every integer type's matvec argument types, from matrices repacked on this machine's own path, and those of
    the GEMMs the prefill of each type runs."""
    if not INT_KERNELS:
        pytest.skip("the integer layouts' argument types come from a process on an integer path (this one: float)")
    from kvant.runtime.kernels._gemm import int_matmul
    rng = np.random.default_rng(0)
    matvec = {}
    for name in INT_TYPES:
        raw, _ = make_weight(name, 16, 1, rng)
        qm = prepare(raw, name)
        out, x = np.empty(16, np.float32), np.empty(qm.shape[1], np.float32)
        matvec[name] = tuple(numba.typeof(a) for a in (out, x, *qm.kernel_args))
        if qm.gemm is not None:
            int_matmul(qm, np.empty((5, 16), np.float32), np.ones((5, qm.shape[1]), np.float32))
    from kvant.runtime.kernels import higgs
    from kvant.runtime.kernels.registry import QMatrix
    from kvant.formats.quant import quantize
    higgs_sigs = {}
    for kind, layouts in (("shuffle", higgs.SHUFFLE_LAYOUTS), ("lookup", higgs.LOOKUP_LAYOUTS)):
        for name in HIGGS_TYPES:    # repacked on any CPU (the repack is the same numba code on every path)
            raw = quantize(rng.standard_normal((4, 128)).astype(np.float32), name)
            qm = QMatrix(name, (4, 128), tuple(layouts[name].repack(raw, 128)), layouts[name])
            out, x = np.empty(4, np.float32), np.empty(128, np.float32)
            higgs_sigs.setdefault(kind, {})[name] = tuple(numba.typeof(a) for a in (out, x, *qm.kernel_args))
    from kvant.runtime.kernels._gemm import quantize as gemm_codes
    raw = quantize(rng.standard_normal((16, 128)).astype(np.float32), "HG4")
    codes = gemm_codes(np.ones((5, 128), np.float32), higgs.ROTATED_Q8_0)
    higgs_gemm = {kind: tuple(numba.typeof(a) for a in (np.empty((5, 16), np.float32), *codes,
                                                         *layouts["HG4"].repack(raw, 128)))
                  for kind, layouts in (("shuffle", higgs.SHUFFLE_LAYOUTS), ("lookup", higgs.LOOKUP_LAYOUTS))}
    path = tmp_path_factory.mktemp("signatures") / "signatures.pkl"
    path.write_bytes(pickle.dumps({"matvec": matvec, "gemm": _gemm_kernels(), "higgs": higgs_sigs,
                                   "higgs_gemm": higgs_gemm}))
    return path


@pytest.mark.parametrize("path", sorted(TARGETS))
def test_each_path_emits_its_instructions_for_a_cpu_that_has_them(path, signatures, tmp_path):
    cpu, features, triple = TARGETS[path]
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": features, "KVANT_CPU_PATH": path,
           "NUMBA_CACHE_DIR": str(tmp_path)}      # an empty cache: numba does not show cached code's assembly
    if triple:
        env["KVANT_TARGET_TRIPLE"] = triple
    r = subprocess.run([sys.executable, os.path.join(HERE, "emitted_instructions.py"), str(signatures)],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    counts = json.loads(r.stdout)
    matvec, gemm = counts["matvec"], counts["gemm"]
    kind = counts["higgs_kind"]
    assert kind == ({"avx512vnni": "lookup"}.get(path, "shuffle") if triple is None else None)
    assert sorted(matvec) == sorted(INT_TYPES + (list(HIGGS_TYPES) if kind else []))
    assert len(gemm) >= 9, sorted(gemm)  # blocks16's two, the lattices', TQ's, Q4_K's, Q5_K's, Q6_K's, Q2_K's, Q3_K's
    assert sorted(w for w in gemm if w.startswith(HIGGS_GEMM)) == ([HIGGS_GEMM + kind] if kind else [])
    failed = [f"{name}: {what} ({matvec[name]})" for name in INT_TYPES
              for what, holds in expectations(path, name, matvec[name]) if not holds]
    failed += [f"{name}: {what} ({matvec[name]})" for name in (HIGGS_TYPES if kind else ())
               for what, holds in higgs_expectations(path, kind, name, matvec[name]) if not holds]
    failed += [f"{where}: {what} ({found})" for where, found in sorted(gemm.items())
               for what, holds in gemm_expectations(path, where, found) if not holds]
    assert not failed, f"{path} on {cpu}: " + "; ".join(failed)
