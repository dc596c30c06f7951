"""HIGGS against llama.cpp's data-free types on SmolLM2 or gemma-3-270m: perplexity and KL divergence, en and ru.

Each HIGGS variant (p, n, Hadamard block h, values per scale s) quantizes every matrix of the transformer blocks;
token_embd (SmolLM2 ties it to the output) gets the ggml type that the compared llama.cpp preset gives it. The
variant is scored from a copy of the F32 base whose tensors hold the decoded values (same numbers as a HIGGS file
would give; sizes counted as the file would hold them), against llama.cpp's types quantized by qconv without an
importance matrix (qconv writes llama-quantize's bytes). Same evaluation as bench/quality.py: kvant's perplexity
and KL divergence against the F32 base, c=512, 8 chunks, first halves of ../shared/corpora/{en,ru}.txt.

    python bench/higgs_quality.py [--variants 2:256:64:64,1:16:64:64] [--presets Q4_0,IQ4_XS] [--embd Q8_0]
    python bench/higgs_quality.py --report       # the HIGGS section of bench/RESULTS.md from the stored rows
    python bench/higgs_quality.py --model gemma3 --section 'HIGGS GEMMA' ...
                                                 # gemma-3-270m (base: its published Q4_K_M decoded to F32)
    python bench/higgs_quality.py --presets IQ4_XS --variants '' --section 'HIGGS V2'
                                                 # some rows only, into a section of their own (then --report
                                                 # with the same --section)
    KVANT_CPU_PATH=avx2 python bench/higgs_quality.py --presets '' --variants '' --files HG4
                                                 # a kvant file's row on another kernel path (its own row: the
                                                 # rotated x rounded as that path's kernels round it)

Results are kept in bench/.work/higgs.json (keyed by variant and token_embd type; a kvant file's row by its type and
how the kernels in force round the rotated activations).
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from iq_reference import LANGS, WORK  # noqa: E402
import quality  # noqa: E402
from results import publish  # noqa: E402

STORE = os.path.join(WORK, "higgs.json")

PRESETS = ("Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K_S", "IQ3_S", "Q2_K")
VARIANTS = ("2:256:64:64", "1:16:64:64", "2:64:64:64", "2:16:64:32")
FILE_TYPES = ("HG4", "HG3", "HG2")     # kvant's HIGGS file types, written by qconv and run by the runtime's kernels


def store_path(section):
    """The rows of the HIGGS section in STORE, another section's beside it."""
    return STORE if section == "HIGGS" else STORE.replace(".json", "-" + section.lower().replace(" ", "-") + ".json")


def base_f32():
    """SmolLM2's F32 (the default model's Q4_1 decoded, as bench/models.py makes it), by qconv."""
    from kvant.runtime.model_cache import resolve_model
    path = os.path.join(WORK, "SmolLM2-135M-Instruct-F32.gguf")
    if not os.path.exists(path):
        os.makedirs(WORK, exist_ok=True)
        quality.run(["qconv", "quantize", "--allow-requantize", resolve_model("smollm2"), path + ".partial.gguf",
                     "F32"])
        os.replace(path + ".partial.gguf", path)
    return path


# model -> how the report names it and its base
MODELS = {"smollm2": "SmolLM2-135M-Instruct, base: its F32 (the published Q4_1 decoded)",
          "gemma3": "gemma-3-270m, base: its F32 (the published Q4_K_M decoded)"}


def model_setup(model="smollm2"):
    """The model's F32 base, the evaluation and calibration texts, and the base's KL-divergence files per language."""
    base = base_f32() if model == "smollm2" else quality.base_model(model)
    evaluation, calibration = quality.texts()
    bases = {lang: quality.kl_base(model, base, lang, evaluation[lang]) for lang in LANGS}
    return base, calibration, bases


def tensor_types(path):
    """(type of each tensor, bytes of tensor data)."""
    from kvant.formats.gguf_file import GGUFFile
    with GGUFFile(path) as g:
        return {n: t.ggml_type.name for n, t in g.tensors.items()}, sum(t.nbytes for t in g.tensors.values())


def higgs_file(base, spec, embd_type, out):
    """A copy of base with every block matrix HIGGS-decoded and token_embd through embd_type; returns its size in
    bytes as a file of those types would hold them."""
    from kvant.formats import quant_higgs
    from kvant.formats.dequant import dequantize
    from kvant.formats.ggml_types import ggml_type
    from kvant.formats.gguf_file import GGUFFile
    from kvant.formats.quant import quantize
    shutil.copyfile(base, out)
    size = 0
    with GGUFFile(base) as g:
        infos = dict(g.tensors)
    mm = np.memmap(out, dtype=np.uint8, mode="r+")
    for name, t in infos.items():
        view = mm[t.offset:t.offset + t.nbytes].view(np.float32).reshape(t.shape)
        x = np.array(view)
        if name.startswith("blk.") and x.ndim == 2:
            codes, scales = quant_higgs.quantize(x, spec)
            view[:] = quant_higgs.dequantize(codes, scales, spec)
            size += x.size * np.log2(spec.n) / spec.p / 8 + scales.size * 2
        elif name == "token_embd.weight":
            raw = quantize(x, embd_type)
            view[:] = dequantize(raw, embd_type).reshape(x.shape)
            size += raw.size
        else:
            size += x.size * ggml_type(t.ggml_type.name).type_size / ggml_type(t.ggml_type.name).block_size
    mm.flush()
    del mm
    return int(size)


def activations():
    """How the HIGGS kernels of the kernel path in force (KVANT_CPU_PATH or the CPU's) round the rotated x."""
    from kvant.runtime.kernels import higgs
    return "int8 x (VBMI lookup)" if higgs.LOOKUP else "int8 x (vpshufb)" if higgs.PSHUFB else "float x"


def n_weights(path):
    from kvant.formats.gguf_file import GGUFFile
    with GGUFFile(path) as g:
        return sum(int(np.prod(t.shape)) for t in g.tensors.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS), help="p:n:h:s, comma-separated")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--embd", default="Q8_0", help="token_embd's type in the HIGGS variants")
    ap.add_argument("--files", default=",".join(FILE_TYPES), help="kvant's HIGGS presets, as real files")
    ap.add_argument("--report", action="store_true", help="only write the section from the stored rows")
    ap.add_argument("--section", default="HIGGS", help="the RESULTS.md section, with its own store of rows")
    ap.add_argument("--model", default="smollm2", choices=sorted(MODELS), help="one model a section")
    args = ap.parse_args()
    store_file = store_path(args.section)
    if args.report:
        return report(json.load(open(store_file)), args.section)
    from kvant.formats.quant_higgs import HiggsSpec
    base, _, bases = model_setup(args.model)
    store = json.load(open(store_file)) if os.path.exists(store_file) else {}
    if any(r.get("model", "smollm2") != args.model for r in store.values()):
        sys.exit(f"section {args.section!r} holds rows of another model: give this one a section of its own")
    total = n_weights(base)

    def record(key, path, size):
        row = {"bpw": 8 * size / total, "MB": size / 1e6, "model": args.model}
        for lang in LANGS:
            row[lang] = quality.kvant_scores(path, bases[lang])
            row[lang]["ppl_increase_%"] = quality.increase(row, lang)
        store[key] = row
        with open(store_file, "w") as f:
            json.dump(store, f, indent=1)
        print(key, f"bpw {row['bpw']:.3f}", *(f"{lang} +{row[lang]['ppl_increase_%']:.2f}% "
                                                f"kld {row[lang]['kld_mean']:.4f}" for lang in LANGS), flush=True)

    def record_preset(key, preset, out):
        """qconv's file of a preset, scored and removed (the llama.cpp types, and kvant's own HIGGS files)."""
        if key in store:
            return
        quality.run(["qconv", "quantize", "--force", base, out, preset])
        types, size = tensor_types(out)
        record(key, out, size)
        store[key]["token_embd"] = types["token_embd.weight"]
        os.unlink(out)

    for preset in filter(None, args.presets.split(",")):
        record_preset(f"llama.cpp/{preset}", preset, os.path.join(WORK, f"higgs-cmp-{preset}.gguf"))
    for preset in filter(None, args.files.split(",")):
        record_preset(f"kvant/{preset}/{activations()}", preset, os.path.join(WORK, f"higgs-file-{preset}.gguf"))
    for v in filter(None, args.variants.split(",")):
        spec = HiggsSpec(*map(int, v.split(":")))
        key = f"higgs/{v}/{args.embd}"
        if key in store:
            continue
        out = os.path.join(WORK, "higgs-variant.gguf")
        size = higgs_file(base, spec, args.embd, out)
        record(key, out, size)
        os.unlink(out)
    with open(store_file, "w") as f:
        json.dump(store, f, indent=1)


def report(store, section):
    model = {r.get("model", "smollm2") for r in store.values()}.pop()
    lines = ["Command: `python bench/higgs_quality.py --variants ...` then `--report`. " + MODELS[model] + "; every "
             "block matrix HIGGS-quantized (p values per grid point, n points, Hadamard block h, one fp16 scale per s "
             "values), token_embd in the type of its column (the HIGGS rows: `--embd`, Q8_0 as llama.cpp's presets "
             "give SmolLM2, whose 576-wide rows take no K-quant); llama.cpp's types by qconv (llama-quantize's bytes) "
             "without an importance matrix. Scored by kvant: c=512, 8 chunks of the first halves of "
             "../shared/corpora. The kvant-file rows are `qconv quantize F32 OUT HG4` (HG3, HG2: p=2 with 256, 64, "
             "16 points, h=s=64) run by the runtime's HIGGS kernels; the HIGGS rows are decoded into an F32 copy.", "",
             "| file | bpw | token_embd | PPL +% en | PPL +% ru | mean KLD en | mean KLD ru |",
             "|---|---|---|---|---|---|---|"]
    rows = sorted(store.items(), key=lambda kv: -kv[1]["bpw"])
    for key, r in rows:
        parts = key.split("/")
        if parts[0] == "higgs":
            name = "HIGGS p={} n={} h={} s={}".format(*parts[1].split(":"))
        else:
            kernels = ", ".join(["kvant file, runtime kernels"] + parts[2:])     # older rows: no activation kind
            name = f"{parts[1]} ({kernels if parts[0] == 'kvant' else parts[0]})"
        embd = parts[-1] if parts[0] == "higgs" else r.get("token_embd", "")
        scores = ([f"{r[lang]['ppl_increase_%']:+.2f}" for lang in LANGS]
                  + [f"{r[lang]['kld_mean']:.4f}" for lang in LANGS])
        lines.append(f"| {name} | {r['bpw']:.3f} | {embd} | " + " | ".join(scores) + " |")
    publish(section, "\n".join(lines))


if __name__ == "__main__":
    main()
