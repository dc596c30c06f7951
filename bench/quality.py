"""What each bit costs English and Russian: every preset from Q8_0 down to IQ1_S, quantized by kvant and by
llama.cpp from the same F32 with the same importance matrix, scored by kvant (perplexity and KL divergence
against the F32 base, c=512, 8 chunks) on the first halves of ../shared/corpora/{en,ru}.txt.

Importance matrices come from llama-imatrix on calibration text that is not the evaluation text (the second halves of
the corpora): English only, Russian only, or both (mixed). Writes a QUALITY section into bench/RESULTS.md and
bench/quality.png (PPL increase over the base against bits per weight, one curve per language and quantizer).

    python bench/build_llama_bench.py          # llama-quantize, llama-imatrix, llama-perplexity
    python bench/quality.py [--models smollm2,gemma3] [--presets Q8_0,...] [--calibrations mixed,en,ru]
                            [--quantizers kvant,llama.cpp] [--llama-eval IQ2_XXS,Q4_K_M] [--report] [--no-write]

Results are kept per (model, calibration, quantizer, preset) in bench/.work/quality.json, so a run picks up where an
interrupted one stopped; quantized files are deleted once scored. Bases: SmolLM2-135M-Instruct's F32 (bench/models.py)
and gemma-3-270m's Q4_K_M dequantized to F32 (the only weights there are; `qconv quantize --allow-requantize ... F32`).
The calibration variants apply to the presets below 4 bits, where the importance matrix matters most (with
--calibrations, the first one is used for every preset and the others for LOW_BIT presets only).
"""
import argparse
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from iq_reference import BIN, CHUNKS, CTX, LANGS, THREADS, WORK, halves  # noqa: E402
from quality_restore import restore  # noqa: E402
from results import PATH as RESULTS, path_line, publish  # noqa: E402

PRESETS = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "IQ4_XS", "IQ4_NL", "Q3_K_L", "Q3_K_M", "Q3_K_S",
           "IQ3_M", "IQ3_S", "IQ3_XS", "IQ3_XXS", "Q2_K", "Q2_K_S", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M",
           "IQ1_S", "TQ2_0", "TQ1_0")
TERNARY = ("TQ2_0", "TQ1_0")  # for ternary-trained (BitNet) weights: on other models they destroy the model
LOW_BIT = ("Q3_K_S", "IQ3_XXS", "Q2_K", "Q2_K_S", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S")
QUANTIZERS = ("kvant", "llama.cpp")
STORE = os.path.join(WORK, "quality.json")
PLOT = os.path.join(HERE, "quality.png")


def base_model(name):
    """The F32 base of a model, made if missing."""
    import models
    if name == "smollm2":
        return models.smollm2("F32")
    path = os.path.join(WORK, "gemma-3-270m-F32.gguf")
    if not os.path.exists(path):
        run(["qconv", "quantize", "--allow-requantize", models.gemma3(), path + ".partial.gguf", "F32"])
        os.replace(path + ".partial.gguf", path)
    return path


def run(cmd):
    exe = os.path.join(os.path.dirname(sys.executable), cmd[0]) if cmd[0] in ("qconv", "qrun") else cmd[0]
    r = subprocess.run([exe] + cmd[1:], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd[:3])} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def texts():
    """Evaluation files per language, calibration files per variant."""
    evaluation, calibration = {}, {}
    parts = {lang: halves(lang) for lang in LANGS}
    for lang, (first, second) in parts.items():
        evaluation[lang] = _write(f"eval-{lang}.txt", first)
        calibration[lang] = _write(f"calibration-{lang}.txt", second)
    calibration["mixed"] = _write("calibration-en-ru.txt", "".join(parts[lang][1] for lang in LANGS))
    return evaluation, calibration


def _write(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def imatrix(model, base, calibration_name, calibration):
    out = os.path.join(WORK, f"quality-{model}-{calibration_name}.imatrix.gguf")
    if not os.path.exists(out):
        run([os.path.join(BIN, "llama-imatrix"), "-m", base, "-f", calibration, "-o", out, "-c", str(CTX),
             "-t", str(THREADS), "--no-ppl"])
    return out


def kl_base(model, base, lang, text):
    """The base's log-probabilities on the evaluation text, in llama-perplexity's file format (written by kvant)."""
    out = os.path.join(WORK, f"quality-{model}-F32-{lang}.kld")
    if not os.path.exists(out):
        run(["qrun", "perplexity", base, "-f", text, "-c", str(CTX), "--chunks", str(CHUNKS), "-t", str(THREADS),
             "--kl-divergence-base", out])
    return out


def quantize(quantizer, base, preset, matrix, out):
    if quantizer == "kvant":
        run(["qconv", "quantize", "--imatrix", matrix, "--threads", str(THREADS), "--force", base, out, preset])
    else:
        run([os.path.join(BIN, "llama-quantize"), "--imatrix", matrix, base, out, preset, str(THREADS)])


def bits_per_weight(path):
    """Bits of tensor data per weight, over every tensor (llama.cpp's BPW)."""
    from gguf import GGUFReader
    tensors = GGUFReader(path).tensors
    return 8 * sum(int(t.n_bytes) for t in tensors) / sum(int(t.n_elements) for t in tensors)


def tensor_digest(path):
    """SHA-1 over every tensor's name, type, shape and bytes: equal for two quantizers' files of the same weights
    whatever their metadata says (quantized_by, the imatrix file's name)."""
    import hashlib
    from gguf import GGUFReader
    digest = hashlib.sha1()
    for t in GGUFReader(path).tensors:
        digest.update(f"{t.name}:{int(t.tensor_type)}:{list(t.shape)}".encode())
        digest.update(memoryview(t.data).cast("B"))
    return digest.hexdigest()


def kvant_scores(path, base_file):
    out = run(["qrun", "perplexity", path, "--kl-divergence-base", base_file, "--kl-divergence", "-t", str(THREADS),
               "--json"])
    r = json.loads(out.strip().splitlines()[-1])
    return {k: r[k] for k in ("ppl_q", "ppl_base", "kld_mean", "same_top_p")}


def llama_scores(path, base_file):
    r = subprocess.run([os.path.join(BIN, "llama-perplexity"), "-m", path, "-c", str(CTX), "-b", str(CTX), "-t",
                        str(THREADS), "--kl-divergence-base", base_file, "--kl-divergence"],
                       capture_output=True, text=True)
    text = r.stdout + r.stderr
    pick = {"ppl_q": r"Mean PPL\(Q\)\s+:\s+([0-9.]+)", "ppl_base": r"Mean PPL\(base\)\s+:\s+([0-9.]+)",
            "kld_mean": r"Mean    KLD:\s+(-?[0-9.]+)", "same_top_p": r"Same top p:\s+([0-9.]+)"}
    found = {k: float(re.search(p, text).group(1)) for k, p in pick.items()}
    found["same_top_p"] /= 100
    return found


def load_store():
    """The rows measured on this machine, and those the published section holds that it lacks (quality_restore)."""
    store = {}
    if os.path.exists(STORE):
        with open(STORE, encoding="utf-8") as f:
            store = json.load(f)
    with open(RESULTS, encoding="utf-8") as f:
        text = f.read()
    if "<!-- QUALITY -->" in text:
        stamp = re.search(r"<!-- QUALITY -->\s*## Quality\s*_([^,]+), ([^,]+),", text)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                text=True).stdout.strip()
        where = f"bench/RESULTS.md QUALITY at {commit}" + (f" (measured {stamp.group(1)} on an {stamp.group(2)})"
                                                           if stamp else "")
        restore(store, text, where)
    return store


def full(row):
    """A row with every figure (not only a PPL increase read back from a calibration table)."""
    return row is not None and not row.get("increase_only")


def save_store(store):
    """This machine's rows (not those read back from the section: they are read again at every load)."""
    own = {k: v for k, v in store.items() if not (isinstance(v, dict) and "restored_from" in v)}
    with open(STORE + ".tmp", "w", encoding="utf-8") as f:
        json.dump(own, f, indent=1)
    os.replace(STORE + ".tmp", STORE)


def measure(store, model, calibration_name, quantizer, preset, base, matrix, bases, llama_eval):
    key = f"{model}/{calibration_name}/{quantizer}/{preset}"
    if key in store:
        return
    out = os.path.join(WORK, f"quality-{model}-{quantizer}-{preset}.gguf")
    quantize(quantizer, base, preset, matrix, out)
    row = {"bpw": bits_per_weight(out), "MB": os.path.getsize(out) / 1e6, "tensors_sha1": tensor_digest(out)}
    twin = next((r for k, r in store.items() if k.startswith(f"{model}/{calibration_name}/") and k != key
                 and k.endswith(f"/{preset}") and r.get("tensors_sha1") == row["tensors_sha1"]), None)
    for lang in LANGS:
        # the same tensor bytes score the same (kvant's evaluation is deterministic): scored once
        row[lang] = twin[lang] if twin else kvant_scores(out, bases[lang])
        if quantizer == "llama.cpp" and preset in llama_eval:
            row[f"{lang}_by_llama.cpp"] = llama_scores(out, bases[lang])
    if twin:
        row["scores_of_same_bytes"] = True
    os.unlink(out)
    store[key] = row
    save_store(store)
    print(key, json.dumps(row), flush=True)


def increase(r, lang):
    return 100 * (r[lang]["ppl_q"] / r[lang]["ppl_base"] - 1)


def table(store, model, calibrations):
    lines = [f"**{model}** (base: F32; importance matrix: {calibrations[0]} calibration text). PPL +%: the increase "
             "over the base's perplexity on the same text.", "",
             "| preset | quantizer | bpw | MB | PPL en | PPL ru | PPL +% en | PPL +% ru | mean KLD en | mean KLD ru | "
             "same top p en | same top p ru |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for preset in PRESETS:
        for q in QUANTIZERS:
            r = store.get(f"{model}/{calibrations[0]}/{q}/{preset}")
            if not full(r):
                continue
            lines.append(f"| {preset} | {q} | {r['bpw']:.2f} | {r['MB']:.1f} | {r['en']['ppl_q']:.3f} | "
                         f"{r['ru']['ppl_q']:.3f} | {increase(r, 'en'):+.2f} | {increase(r, 'ru'):+.2f} | "
                         f"{r['en']['kld_mean']:.4f} | {r['ru']['kld_mean']:.4f} | {100 * r['en']['same_top_p']:.1f}% "
                         f"| {100 * r['ru']['same_top_p']:.1f}% |")
    base = next((r for k, r in store.items() if k.startswith(f"{model}/") and "en" in r), None)
    if base is not None:
        # a restored row's base is what its rounded increase implies; the section's own line has the measured one
        en, ru = base.get("base_ppl") or (base["en"]["ppl_base"], base["ru"]["ppl_base"])
        lines += ["", f"Base perplexity: en {en:.3f}, ru {ru:.3f}. "
                  f"{' and '.join(TERNARY)} store weights as -1, 0, 1 times a scale: they are for ternary-trained (BitNet) "
                  "models, and on this one they destroy it (as llama.cpp's own do); the paragraph and the plot leave "
                  "them out."]
    restored = {r["restored_from"] for k, r in store.items() if k.startswith(f"{model}/") and "restored_from" in r}
    if restored:        # rows a store of another machine held, read back from the table they were published in
        lines += ["", f"These rows are re-read from {'; '.join(sorted(restored))}."]
    cross = [(k, r) for k, r in store.items() if k.startswith(f"{model}/")
             and any(f"{lang}_by_llama.cpp" in r for lang in LANGS)]
    pairs = {p: [store.get(f"{model}/{calibrations[0]}/{q}/{p}") for q in QUANTIZERS] for p in PRESETS}
    pairs = {p: rows for p, rows in pairs.items() if all(map(full, rows))}
    same = [p for p, rows in pairs.items() if _scores(rows[0]) == _scores(rows[1])]
    differ = [p for p in pairs if p not in same]
    if same:
        lines += ["", "Where both quantizers ran, their rows are the same figures (the files are the same bytes: "
                  "bench/iq_quantize.py, the tests): " + ", ".join(same) + "."]
    once = [p for p, rows in pairs.items() if rows[1].get("scores_of_same_bytes")]
    if once:
        lines += ["", "Of these, the files whose tensor bytes were checked equal (SHA-1 over every tensor) and scored "
                  "once: " + ", ".join(once) + "."]
    if differ:
        lines += ["", "Where both ran and the figures differ (the files are not the same bytes): " + ", ".join(
            f"{p} (PPL en {pairs[p][0]['en']['ppl_q']:.3f} / {pairs[p][1]['en']['ppl_q']:.3f})" for p in differ)
            + "."]
    if cross:
        lines += ["", "The same llama.cpp-quantized files scored by llama-perplexity (against the same base file), "
                  "llama-perplexity / kvant: " + "; ".join(f"{k.split('/')[-1]}: " + ", ".join(
                      f"{lang} PPL {r[f'{lang}_by_llama.cpp']['ppl_q']:.3f} / {r[lang]['ppl_q']:.3f}"
                      + (f", mean KLD {r[f'{lang}_by_llama.cpp']['kld_mean']:.4f} / {r[lang]['kld_mean']:.4f}"
                         if "kld_mean" in r[f"{lang}_by_llama.cpp"] else "")
                      for lang in LANGS if f"{lang}_by_llama.cpp" in r) for k, r in cross)]
    return lines


def _scores(row):
    """What a row measured of a file: its size and each language's PPL, KLD and same-top-p."""
    return (row["MB"],) + tuple(row[lang][k] for lang in ("en", "ru") for k in ("ppl_q", "kld_mean", "same_top_p"))


def calibration_table(store, model, calibrations, quantizer="kvant"):
    lines = [f"Calibration text against the PPL increase (**{model}**, quantized by {quantizer}): % over the base, en / ru",
             "", "| preset | " + " | ".join(calibrations) + " |", "|---" * (len(calibrations) + 1) + "|"]
    for preset in LOW_BIT:
        cells = []
        for c in calibrations:
            r = store.get(f"{model}/{c}/{quantizer}/{preset}")
            cells.append("" if r is None else f"{increase(r, 'en'):+.1f} / {increase(r, 'ru'):+.1f}")
        if any(cells):
            lines.append(f"| {preset} | " + " | ".join(cells) + " |")
    return lines


def findings(store, model, calibration, calibrations, gap=5.0):
    """The paragraph: where Russian starts to lose more than English (the highest bit width from which on the gap
    in PPL increase, ru minus en, stays above `gap` points at every lower one), the KLD ratio, and what the
    calibration text changes below 4 bits."""
    rows = sorted(((r["bpw"], k.split("/")[-1], r) for k, r in store.items()
                   if k.startswith(f"{model}/{calibration}/kvant/") and not k.split("/")[-1] in TERNARY and full(r)),
                  reverse=True)
    if not rows:
        return []
    gaps = [(bpw, p, increase(r, "ru") - increase(r, "en"), r["ru"]["kld_mean"] / r["en"]["kld_mean"])
            for bpw, p, r in rows]
    start = None
    for i in range(len(gaps)):
        if all(g[2] > gap for g in gaps[i:]):
            start = gaps[i]
            break
    ratios = [g[3] for g in gaps]
    text = [f"**{model}** ({calibration} importance matrix): Russian's mean KLD is {min(ratios):.1f}-{max(ratios):.1f}x "
            "English's at every preset. "]
    if start is None:
        worst = max(gaps, key=lambda g: g[2])
        text.append(f"In PPL increase there is no bit width below which Russian loses over {gap:.0f} points more than "
                    f"English at every preset (the largest gap: {worst[2]:+.1f} points at {worst[1]}, "
                    f"{worst[0]:.2f} bpw).")
    else:
        above = [abs(g[2]) for g in gaps if g[0] > start[0]]
        text.append(f"In PPL increase, Russian loses more than English by over {gap:.0f} points from {start[1]} "
                    f"({start[0]:.2f} bpw) down ({start[2]:+.1f} there, {gaps[-1][2]:+.1f} at {gaps[-1][1]}); above "
                    f"it the gap is at most {max(above, default=0):.1f} points.")
    others = [c for c in calibrations if c != calibration]
    if others:
        deltas = {c: [] for c in calibrations}
        for p in LOW_BIT:
            rs = {c: store.get(f"{model}/{c}/kvant/{p}") for c in calibrations}
            if all(rs.values()):
                for c in calibrations:
                    deltas[c].append(increase(rs[c], "ru") - increase(rs[c], "en"))
        if deltas[calibration]:
            mean = {c: sum(v) / len(v) for c, v in deltas.items() if v}
            text.append(" Over the presets below 4 bits, the mean gap (ru minus en, points of PPL increase) is "
                        + ", ".join(f"{mean[c]:+.1f} with {c} calibration" for c in mean) + ".")
    return ["".join(text)]


def plot(store, models, calibration, quantizers):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        for q, style in zip(quantizers, ("-", "--")):
            for lang, color in zip(LANGS, ("tab:blue", "tab:red")):
                pts = sorted((r["bpw"], increase(r, lang)) for k, r in store.items()
                             if k.startswith(f"{model}/{calibration}/{q}/") and k.split("/")[-1] not in TERNARY
                             and full(r))
                if pts:
                    ax.plot(*zip(*pts), style, color=color, marker="o", ms=3, label=f"{lang}, quantized by {q}")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_xlabel("bits per weight")
        ax.set_ylabel("PPL increase over F32, %")
        ax.set_title(f"{model} ({calibration} importance matrix)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--calibrations", default="mixed,en,ru")
    ap.add_argument("--quantizers", default=",".join(QUANTIZERS))
    ap.add_argument("--llama-eval", default="Q4_K_M,IQ3_XXS,IQ2_XXS", help="presets llama-perplexity also scores")
    ap.add_argument("--report", action="store_true", help="only write the section from the rows measured so far")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    models, presets = args.models.split(","), args.presets.split(",")
    calibrations, quantizers = args.calibrations.split(","), args.quantizers.split(",")
    evaluation, calibration_files = texts()
    store = load_store()
    command = "python bench/quality.py " + " ".join(sys.argv[1:])
    if not args.report:
        store["_commands"] = [c for c in store.get("_commands", []) if c != command] + [command]
    for model in models if not args.report else []:
        base = base_model(model)
        bases = {lang: kl_base(model, base, lang, evaluation[lang]) for lang in LANGS}
        for i, c in enumerate(calibrations):
            matrix = imatrix(model, base, c, calibration_files[c])
            for preset in presets if i == 0 else [p for p in presets if p in LOW_BIT]:
                for q in quantizers:
                    measure(store, model, c, q, preset, base, matrix, bases, args.llama_eval.split(","))
    save_store(store)
    models = [m for m in models if any(k.startswith(f"{m}/") for k in store)]
    lines = ["Commands (each adds its rows to bench/.work/quality.json): " + "; ".join(
             f"`{c}`" for c in store["_commands"]) + f" ({path_line()}; c={CTX}, {CHUNKS} chunks of the first halves of "
             f"../shared/corpora en and ru; importance matrices by llama-imatrix on the second halves; {THREADS} "
             "threads). Plot: bench/quality.png.", ""]
    for model in models:
        lines += findings(store, model, calibrations[0], calibrations) + [""]
    for model in models:
        lines += table(store, model, calibrations) + [""]
        if len(calibrations) > 1:
            lines += calibration_table(store, model, calibrations) + [""]
    plot(store, models, calibrations[0], quantizers)
    publish("QUALITY", "\n".join(lines).rstrip(), not args.no_write)


if __name__ == "__main__":
    main()
