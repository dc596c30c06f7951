"""Every preset qconv knows, applied by `qconv quantize` and by llama.cpp (llama_model_quantize through
llama-cpp-python, i.e. llama-quantize) to the same float GGUF of SmolLM2-135M-Instruct and of gemma-3-270m: the
per-tensor types (and general.file_type) must be llama.cpp's, and the files the same bytes.

Inputs: SmolLM2's F32 file of bench/models.py (llama.cpp's requantization of the shipped Q4_1 to F32) and gemma's
BF16 file converted by `qconv to-gguf -t BF16` from the HF directory that bench/convert_speed.py rebuilds (torch and
transformers, once). Needs llama-cpp-python. Outputs go to bench/.work/preset_types/ and are deleted once compared
unless they differ.
With --imatrix every preset runs a second time with the same importance matrix on both sides (`qconv imatrix` on
4 chunks of ../shared/corpora/en.txt, made once into bench/.work/); Q2_K_S is refused by both without one.
    python bench/preset_types.py [--models smollm2,gemma3] [--presets Q4_K_M,Q6_K] [--threads 2] [--imatrix] [--write]
"""
import argparse
import collections
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, ".work")
OUT = os.path.join(WORK, "preset_types")
sys.path.insert(0, HERE)

import convert_speed  # noqa: E402  (bench/ is not a package)

from kvant.convert import recipes  # noqa: E402
from kvant.formats.gguf_file import GGUFFile  # noqa: E402

MODELS = ("smollm2", "gemma3")
CORPUS = os.path.join(HERE, "..", "..", "shared", "corpora", "en.txt")


def source(name):
    """The float GGUF both quantizers start from."""
    import models
    if name == "smollm2":
        return models.smollm2("F32")
    path = os.path.join(WORK, "gemma-3-270m-BF16.gguf")
    if not os.path.exists(path):
        subprocess.run(["qconv", "to-gguf", convert_speed.hf_dir("gemma3"), "-o", path, "-t", "BF16"], check=True)
    return path


def types_of(path):
    with GGUFFile(path) as g:
        return {n: t.ggml_type.name for n, t in g.tensors.items()}, int(g.metadata["general.file_type"])


def histogram(types):
    return ", ".join(f"{t} {n}" for t, n in collections.Counter(types.values()).most_common())


def imatrix_file(name, src):
    """An importance matrix of the model from `qconv imatrix` (4 chunks of 512 tokens of ../shared/corpora/en.txt)."""
    path = os.path.join(WORK, f"{convert_speed.LABELS[name]}.imatrix.gguf")
    if not os.path.exists(path):
        subprocess.run(["qconv", "imatrix", src, "-f", CORPUS, "-o", path, "-c", "512", "--chunks", "4"], check=True)
    return path


def check(name, src, preset, threads, imatrix=None):
    """One (model, preset): quantize with both, compare. Returns a table row's cells."""
    import llamacpp_oracle
    os.makedirs(OUT, exist_ok=True)
    label = preset + (" +imatrix" if imatrix else "")
    ref, ours = (os.path.join(OUT, f"{name}-{preset}{'-im' if imatrix else ''}-{who}.gguf")
                 for who in ("llamacpp", "qconv"))
    cmd = ["qconv", "quantize", src, ours, preset, "--threads", str(threads), "--force"]
    cmd += ["--imatrix", imatrix] if imatrix else []
    t0 = time.perf_counter()
    try:
        llamacpp_oracle.quantize(src, ref, preset, n_threads=threads, imatrix=imatrix)
        ref_error = None
    except RuntimeError as e:
        ref_error = str(e)
    t1 = time.perf_counter()
    ours_run = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    t2 = time.perf_counter()
    if ref_error or ours_run.returncode:
        why = ours_run.stderr.strip().splitlines()[-1].removeprefix("qconv: error: ") if ours_run.returncode \
            else "qconv wrote a file"
        verdict = "both refuse" if ref_error and ours_run.returncode else "**only one refuses**"
        print(f"{name} {label:16s} {verdict}: llama.cpp: {ref_error or 'ok'}; qconv: {why}", flush=True)
        return [convert_speed.LABELS[name], label, "", "", f"{verdict} (qconv: {why})", ""]
    (rt, rft), (kt, kft) = types_of(ref), types_of(ours)
    differ = [f"`{n}` {kt.get(n)} vs {rt.get(n)}" for n in rt.keys() | kt.keys() if rt.get(n) != kt.get(n)]
    same_types = "yes" if not differ else f"**no** ({len(differ)}: " + ", ".join(sorted(differ)[:6]) + ")"
    if kft != rft:
        same_types += f"; general.file_type {kft} vs {rft}"
    same_bytes = convert_speed.compare(ours, ref)
    if same_bytes == "yes":
        os.remove(ref)
        os.remove(ours)
    print(f"{name} {label:16s} types {same_types[:50]:50s} bytes {same_bytes[:50]}  ({t1 - t0:.1f} s llama.cpp, "
          f"{t2 - t1:.1f} s qconv)", flush=True)
    return [convert_speed.LABELS[name], label, str(len(rt)), histogram(rt), same_types, same_bytes]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--presets", default=",".join(recipes.PRESETS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--imatrix", action="store_true", help="also every preset with the same importance matrix")
    ap.add_argument("--write", action="store_true", help="rewrite the PRESET TYPES section of bench/RESULTS.md")
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        src = source(name)
        for preset in args.presets.split(","):
            rows.append(check(name, src, preset, args.threads))
        if args.imatrix:
            im = imatrix_file(name, src)
            for preset in args.presets.split(","):
                rows.append(check(name, src, preset, args.threads, im))
    head = ["model", "preset", "tensors", "llama.cpp's types", "types equal (qconv vs llama.cpp)", "same bytes"]
    body = "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head)] + rows) + "\n"
    n_ok = sum(r[4] == "yes" and r[5] == "yes" for r in rows)
    n_refused = sum(r[4].startswith("both refuse") for r in rows)
    summary = (f"{n_ok} of {len(rows)} (model, preset) runs: same types and same bytes"
               + (f"; {n_refused} refused by both (Q2_K_S needs an importance matrix)" if n_refused else "") + ".\n\n")
    print(summary + body)
    if args.write:
        import llamacpp_oracle
        from results import update_section
        sources = {n: os.path.relpath(source(n), os.path.dirname(HERE)) for n in args.models.split(",")}
        cmd = f"python bench/preset_types.py --models {args.models} --threads {args.threads}"
        cmd += " --imatrix" if args.imatrix else ""
        if args.presets != ",".join(recipes.PRESETS):
            cmd += f" --presets {args.presets}"
        update_section("PRESET TYPES", (
            "`qconv quantize SRC OUT PRESET` against llama.cpp's llama_model_quantize (llama-quantize; "
            f"llama-cpp-python {llamacpp_oracle.version()}) on the same input, for every preset qconv knows. "
            "Inputs: " + "; ".join(f"{convert_speed.LABELS[n]} `{p}`" for n, p in sources.items()) +
            " (SmolLM2: llama.cpp's F32 requantization of the shipped Q4_1; gemma: `qconv to-gguf -t BF16` of the "
            "HF directory bench/convert_speed.py rebuilds). Types differ as `tensor` qconv's vs llama.cpp's.\n"
            f"Command: `{cmd} --write`\n\n" + summary + body))


if __name__ == "__main__":
    main()
