"""Rows of bench/quality.py's store read back from the QUALITY section of bench/RESULTS.md, for the rows a machine's
own store does not hold (each machine keeps bench/.work/quality.json; the published section is the record).

What the section prints is what comes back: every row of the main tables (bpw, MB, PPL, mean KLD, same top p per
language, the base's perplexity as the row's printed increase implies), the cells of the calibration tables (a PPL
increase per language: the row's PPL is the base's times it, to the 0.1% printed), llama-perplexity's cross-check
figures, the list of files scored once, and the commands. Restored rows carry "restored_from", which the section names.
"""
import re

NUMBER = r"([-+]?[0-9.]+)"
ROW = re.compile(r"^\| (\w+) \| (kvant|llama\.cpp) \| " + r" \| ".join([NUMBER] * 8) + r" \| "
                 + r"% \| ".join([NUMBER] * 2) + r"% \|$")
HEADER = re.compile(r"^\*\*(\w+)\*\* \(base: F32; importance matrix: (\w+) calibration text\)")
BASE = re.compile(r"^Base perplexity: en ([0-9.]+), ru ([0-9.]+)\.")
CALIBRATION = re.compile(r"^Calibration text against the PPL increase \(\*\*(\w+)\*\*, quantized by ([\w.]+)\)")
CROSS = re.compile(r"(\w+) PPL ([0-9.]+) / [0-9.]+(?:, mean KLD ([0-9.]+) / [0-9.]+)?")


def _section(results_text):
    start, end = results_text.index("<!-- QUALITY -->"), results_text.index("<!-- /QUALITY -->")
    return results_text[start:end].splitlines()


def restore(store, results_text, where):
    """Add to store every row the section holds that store lacks, tagged restored_from = where (or the source the
    section itself names for a model's rows). Returns the number of rows added."""
    lines = _section(results_text)
    model = calibration = None
    added, cells, sources, bases = {}, {}, {}, {}
    for line in lines:
        if line.startswith("Commands (each adds its rows"):
            head = line.split(" (CPU:")[0]
            old = re.findall(r"`([^`]+)`", head)
            store["_commands"] = old + [c for c in store.get("_commands", []) if c not in old]
        elif m := HEADER.match(line):
            model, calibration, table = m.group(1), m.group(2), "main"
        elif m := CALIBRATION.match(line):
            model, table, quantizer = m.group(1), "calibration", m.group(2)
            columns = None
        elif model is None:
            continue
        elif (m := ROW.match(line)) and table == "main":
            preset, q = m.group(1), m.group(2)
            bpw, mb, ppl_en, ppl_ru, inc_en, inc_ru, kld_en, kld_ru, top_en, top_ru = map(float, m.groups()[2:])
            # the base as the row's own printed increase implies, so that the increase prints as it was
            added[f"{model}/{calibration}/{q}/{preset}"] = {
                "bpw": bpw, "MB": mb,
                "en": {"ppl_q": ppl_en, "ppl_base": ppl_en / (1 + inc_en / 100), "kld_mean": kld_en,
                       "same_top_p": top_en / 100},
                "ru": {"ppl_q": ppl_ru, "ppl_base": ppl_ru / (1 + inc_ru / 100), "kld_mean": kld_ru,
                       "same_top_p": top_ru / 100}}
        elif m := BASE.match(line):
            bases[model] = float(m.group(1)), float(m.group(2))
        elif line.startswith("These rows are re-read from "):
            sources[model] = line[len("These rows are re-read from "):].rstrip(".")
        elif line.startswith("Of these, the files whose tensor bytes were checked equal"):
            for preset in line.split(": ", 1)[1].rstrip(".").split(", "):
                added.get(f"{model}/{calibration}/llama.cpp/{preset}", {})["scores_of_same_bytes"] = True
        elif line.startswith("The same llama.cpp-quantized files scored by llama-perplexity"):
            for part in line.split("llama-perplexity / kvant: ", 1)[1].rstrip(".").split("; "):
                preset, figures = part.split(": ", 1)
                row = added.get(f"{model}/{calibration}/llama.cpp/{preset}")
                for lang, ppl, kld in CROSS.findall(figures):
                    if row is not None:
                        row[f"{lang}_by_llama.cpp"] = {"ppl_q": float(ppl), **({"kld_mean": float(kld)} if kld else {})}
        elif table == "calibration" and line.startswith("| preset |"):
            columns = [c.strip() for c in line.strip("|").split("|")][1:]
        elif table == "calibration" and columns and line.startswith("| ") and not line.startswith("|---"):
            preset, *values = [c.strip() for c in line.strip("|").split("|")]
            for c, value in zip(columns, values):
                if value:
                    inc_en, inc_ru = (float(x) for x in value.split(" / "))
                    cells[f"{model}/{c}/{quantizer}/{preset}"] = (model, inc_en, inc_ru)
    for key, (model, inc_en, inc_ru) in cells.items():
        if key not in added and model in bases:
            base_en, base_ru = bases[model]
            added[key] = {"en": {"ppl_q": base_en * (1 + inc_en / 100), "ppl_base": base_en},
                          "ru": {"ppl_q": base_ru * (1 + inc_ru / 100), "ppl_base": base_ru}, "increase_only": True}
    count = 0
    for key, row in added.items():
        if key.split("/")[0] in bases:
            row["base_ppl"] = bases[key.split("/")[0]]
        if key not in store:
            store[key] = {**row, "restored_from": sources.get(key.split("/")[0], where)}
            count += 1
    return count
