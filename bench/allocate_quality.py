"""The linearity-theorem allocator (`qconv quantize --target-bpw`) against llama.cpp's presets at the same size.

For each preset (default Q4_K_M and Q3_K_M): quantize SmolLM2's F32 with the preset (qconv, which writes
llama-quantize's bytes) and with the allocator at the preset file's bits per weight, both without an importance
matrix; score both as bench/quality.py does (kvant's perplexity and KL divergence against the F32 base, c=512,
8 chunks of the first halves of ../shared/corpora/{en,ru}.txt). The allocator measures its sensitivities on the
other halves (the mixed calibration text), once for every target; its predicted perplexity increase is set against
the one measured on those calibration chunks and on the evaluation texts.

    python bench/allocate_quality.py [--presets Q4_K_M,Q3_K_M] [--types Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0] [--chunks 2]
    python bench/allocate_quality.py --presets IQ4_XS --types HG3,HG4,Q4_K,Q5_K,Q6_K,Q8_0   # with HIGGS types
    python bench/allocate_quality.py --report      # the ALLOCATOR section of bench/RESULTS.md from the stored rows

Results go to bench/.work/allocate.json; sensitivities are kept in bench/.work/allocate-sens-*.npz.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from iq_reference import BIN, LANGS, WORK  # noqa: E402
import quality  # noqa: E402
from higgs_quality import model_setup, tensor_types  # noqa: E402
from results import publish  # noqa: E402

STORE = os.path.join(WORK, "allocate.json")
DEFAULT_TYPES = "Q2_K,Q3_K,Q4_K,Q5_K,Q6_K,Q8_0"


def sensitivities(base, text, chunks, types):
    from kvant.convert import allocate as al
    from kvant.formats.gguf_file import GGUFFile
    path = os.path.join(WORK, f"allocate-sens-smollm2-{chunks}.npz")
    with GGUFFile(base) as f:
        allowed = al.allowed_types(f, types)
    if not os.path.exists(path):
        s = al.sensitivities(base, list(allowed), text, n_chunks=chunks)
        np.savez(path, names=np.array(list(s.alphas)), alphas=np.array(list(s.alphas.values())),
                 base_loss=s.base_loss, **{f"energy:{n}": e for n, e in s.energies.items()})
    z = np.load(path)
    energies = {k[len("energy:"):]: z[k] for k in z.files if k.startswith("energy:")}
    return al.Sensitivity(dict(zip(z["names"].tolist(), z["alphas"].tolist())), float(z["base_loss"]), energies), \
        allowed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="Q4_K_M,Q3_K_M")
    ap.add_argument("--types", default=DEFAULT_TYPES)
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--report", action="store_true", help="only write the section from the stored rows")
    ap.add_argument("--keep", action="store_true", help="keep the allocator's files (bench/.work/allocator-*.gguf)")
    args = ap.parse_args()
    if args.report:
        return report(json.load(open(STORE)))
    from kvant.convert import allocate as al
    from kvant.convert.requantize import quantize_gguf
    from kvant.formats import higgs_types
    from kvant.formats.gguf_file import GGUFFile
    base, calibration, bases = model_setup()
    with open(calibration["mixed"], encoding="utf-8") as f:
        cal_text = f.read()
    types = al.parse_types(args.types)
    sens, allowed = sensitivities(base, cal_text, args.chunks, types)
    with GGUFFile(base) as f:
        choices = al.candidates(f, allowed, None, sens.energies)
        fixed, n_weights = al.fixed_bytes_and_weights(f, choices)
    store = json.load(open(STORE)) if os.path.exists(STORE) else {}

    def score(path, by_llama=False):
        row = {}
        for lang in LANGS:
            row[lang] = quality.kvant_scores(path, bases[lang])
            row[lang]["ppl_increase_%"] = quality.increase(row, lang)
            if by_llama and os.path.exists(os.path.join(BIN, "llama-perplexity")):
                row[f"{lang}_by_llama.cpp"] = quality.llama_scores(path, bases[lang])
        row["calibration_increase_%"] = 100 * math.expm1(al.measured_dloss(path, cal_text, sens.base_loss,
                                                                            args.chunks))
        return row

    for preset in args.presets.split(","):
        out = os.path.join(WORK, f"allocate-{preset}.gguf")
        quality.run(["qconv", "quantize", "--force", base, out, preset])
        _, size = tensor_types(out)
        bpw = 8 * size / n_weights
        row = {"bpw": bpw, "chunks": args.chunks, **score(out)}
        store[f"preset/{preset}"] = row
        print(preset, json.dumps(row), flush=True)
        chosen, dloss = al.solve(choices, sens.alphas, int(bpw * n_weights / 8) - fixed)
        with GGUFFile(base) as f:
            preset_name = al.file_preset(chosen, f)
        quantize_gguf(base, out, preset_name, al.overrides_for(chosen), force=True, progress=False)
        _, size = tensor_types(out)
        runs_in_llama = not any(higgs_types.is_higgs(t) for t in chosen.values())
        row = {"bpw": 8 * size / n_weights, "predicted_increase_%": 100 * math.expm1(dloss), "chunks": args.chunks,
               **score(out, runs_in_llama),
               "types": {t: sum(1 for v in chosen.values() if v == t) for t in sorted(set(chosen.values()))}}
        # a run with other candidate types is a row of its own
        store[f"allocator/{preset}" + ("" if args.types == DEFAULT_TYPES else f" from {args.types}")] = row
        print("allocator at", preset, json.dumps(row), flush=True)
        if args.keep:
            os.replace(out, os.path.join(WORK, f"allocator-{preset}.gguf"))
        else:
            os.unlink(out)
        with open(STORE, "w") as f:
            json.dump(store, f, indent=1)


def report(store):
    lines = ["Command: `python bench/allocate_quality.py [--chunks K] [--presets ...] [--types ...]` then `--report` "
             "(SmolLM2-135M-Instruct F32 base, no importance "
             "matrix; sensitivities on K chunks of the mixed calibration text (column chunks), the second halves of "
             "../shared/corpora; scored by kvant on 8 chunks of the first halves, c=512). Predicted: the linearity "
             "theorem's perplexity increase on the calibration chunks; measured on the same chunks, then on the "
             "evaluation texts. The allocator's files are ordinary GGUF: llama-perplexity (built by "
             "bench/build_llama_bench.py) reads them and scores them on the same tokens (last columns).", "",
             "| file | bpw | PPL +% en | PPL +% ru | mean KLD en | mean KLD ru | chunks | predicted +% (calibration) | "
             "measured +% (calibration) | predicted / measured | types | PPL en / ru by kvant | by llama.cpp |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in store.items():
        kind, preset = key.split("/")
        size_of, _, types_from = preset.partition(" from ")
        name = f"{preset} (llama.cpp preset)" if kind == "preset" else \
            f"allocator at {size_of}'s size" + (f", from {types_from}" if types_from else "")
        pred = f"{r['predicted_increase_%']:+.2f}" if "predicted_increase_%" in r else ""
        ratio = f"{r['predicted_increase_%'] / r['calibration_increase_%']:.2f}" if pred else ""
        types = ", ".join(f"{n} {t}" for t, n in r.get("types", {}).items())
        kv = " / ".join(f"{r[lang]['ppl_q']:.3f}" for lang in LANGS)
        lc = " / ".join(f"{r[f'{lang}_by_llama.cpp']['ppl_q']:.3f}" for lang in LANGS if f"{lang}_by_llama.cpp" in r)
        lines.append(f"| {name} | {r['bpw']:.3f} | {r['en']['ppl_increase_%']:+.2f} | {r['ru']['ppl_increase_%']:+.2f} "
                     f"| {r['en']['kld_mean']:.4f} | {r['ru']['kld_mean']:.4f} | {r.get('chunks', 2)} | {pred} | "
                     f"{r['calibration_increase_%']:+.2f} | {ratio} | {types} | {kv} | {lc} |")
    ratios = [r["predicted_increase_%"] / r["calibration_increase_%"] for r in store.values()
              if "predicted_increase_%" in r]
    within = sum(abs(x - 1) <= 0.2 for x in ratios)
    lines += ["", f"The linearity theorem against the measurement: the predicted increase is "
              f"{', '.join(f'{x:.2f}' for x in ratios)} of the measured one on the same calibration chunks, within 20% "
              f"for {within} of {len(ratios)} allocator files; it errs both ways (noise in sensitivities measured on "
              f"a few chunks, and in the measured increase itself), so more chunks are the next thing to try."]
    publish("ALLOCATOR", "\n".join(lines))


if __name__ == "__main__":
    main()
