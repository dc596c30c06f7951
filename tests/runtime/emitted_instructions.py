"""Compile every integer kernel's matvec for a named CPU and count the instructions that say which path it took.

    NUMBA_CPU_NAME=alderlake NUMBA_CPU_FEATURES=+avx2,+avxvnni,... KVANT_CPU_PATH=avxvnni \
        python tests/runtime/emitted_instructions.py SIGNATURES.pkl
    KVANT_TARGET_TRIPLE=aarch64-unknown-linux-gnu NUMBA_CPU_NAME=apple-m1 NUMBA_CPU_FEATURES=+neon,+dotprod \
        KVANT_CPU_PATH=dotprod python tests/runtime/emitted_instructions.py SIGNATURES.pkl

SIGNATURES.pkl: {"matvec": {type name: numba argument types of its matvec}, "gemm": {module.function: the argument
types each prefill GEMM was called with}, "higgs": {layout kind: {HIGGS type: its matvec's argument types}},
"higgs_gemm": {layout kind: the argument types of its HIGGS GEMM}}, written by a process on the host's own path
(test_emitted_instructions.py; the repacked arrays are the same on every integer path; the HIGGS types' depend on the
layout kind, which this process takes from the path and features it compiles for). Nothing is run here, so a
CPU this machine is not can be named: the kernels are compiled and their assembly read. Prints one JSON object,
{"matvec": {type: {mnemonic: count}}, "gemm": {module.function: {mnemonic: count}}}, for the mnemonics in
MNEMONICS, with "zmm" and "ymm" counting the instructions that use such registers, "{vex} vpdpbusd" AVX-VNNI's
encoding of it and "masked vpsubb" a vpsubb under an opmask; on AArch64 sdot, usdot, usmmla and tbl.

KVANT_TARGET_TRIPLE compiles for another architecture than this process runs on: LLVM's targets are all registered
and numba is told the triple is the process's own before it builds its code generator. The machine code is loaded
(relocated) but never called.
"""
import json
import os
import pickle
import re
import sys
import warnings

MNEMONICS = ("vpdpbusd", "{vex} vpdpbusd", "vpmaddubsw", "vpmaddwd", "vpshufb", "vpsignb", "vpermb", "vpermi2b",
             "vpermt2b", "vpgatherdd", "masked vpsubb", "zmm", "ymm", "sdot", "usdot", "usmmla", "tbl")
PLAIN = ("vpdpbusd", "vpmaddubsw", "vpmaddwd", "vpshufb", "vpsignb", "vpermb", "vpermi2b", "vpermt2b", "vpgatherdd",
         "sdot", "usdot", "usmmla", "tbl")


def counts(asm):
    found = dict.fromkeys(MNEMONICS, 0)
    for line in asm.splitlines():
        text = line.strip()
        if not text or text.startswith((".", "#")) or text.endswith(":"):
            continue
        for name in PLAIN:
            found[name] += bool(re.match(rf"(\{{vex\}}\s*)?{name}\b", text))
        found["{vex} vpdpbusd"] += text.startswith("{vex}") and "vpdpbusd" in text
        found["masked vpsubb"] += text.startswith("vpsubb") and "{%k" in text
        found["zmm"] += "%zmm" in text
        found["ymm"] += "%ymm" in text
    return found


def target_triple(triple):
    """Make numba compile for `triple` (before numba builds its code generator, at its first compile)."""
    from llvmlite import binding
    binding.initialize_all_targets()
    binding.initialize_all_asmprinters()
    binding.get_process_triple = binding.get_default_triple = lambda: triple


def main(path):
    if os.environ.get("KVANT_TARGET_TRIPLE"):
        target_triple(os.environ["KVANT_TARGET_TRIPLE"])
    import importlib
    from kvant.runtime.kernels import higgs, layout_for
    with open(path, "rb") as f:
        signatures = pickle.load(f)
    result = {"matvec": {}, "gemm": {}}
    kind = "lookup" if higgs.LOOKUP else "shuffle" if higgs.PSHUFB else None
    matvecs = {**signatures["matvec"], **signatures["higgs"].get(kind, {})}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, sig in matvecs.items():
            kernel = layout_for(name).matvec
            kernel.compile(sig)
            result["matvec"][name] = counts(kernel.inspect_asm(sig))
        gemms = dict(signatures["gemm"])
        if kind:                    # HIGGS's integer prefill: the layout kind's own GEMM
            gemms[f"kvant.runtime.kernels.higgs._gemm_{kind}"] = [signatures["higgs_gemm"][kind]]
        for where, sigs in gemms.items():
            module, name = where.rsplit(".", 1)
            kernel = getattr(importlib.import_module(module), name)
            found = dict.fromkeys(MNEMONICS, 0)
            for sig in sigs:
                kernel.compile(sig)
                for mnemonic, count in counts(kernel.inspect_asm(sig)).items():
                    found[mnemonic] += count
            result["gemm"][where] = found
    result["higgs_kind"] = kind
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
