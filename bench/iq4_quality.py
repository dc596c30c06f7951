"""IQ4_NL and IQ4_XS by `qconv quantize` and by llama.cpp (llama_model_quantize through llama-cpp-python) from the
same F32 GGUF: the error of every tensor the preset quantizes against the F32 weights (RMSE, both files dequantized
by the gguf package), and the perplexity of both files with `qrun perplexity -c 512 --chunks 8` on
../shared/corpora/en.txt and ru.txt. The converter issue asks that qconv's error be no worse than llama.cpp's.

Byte-identical files are scored once (same bytes, same perplexity). Needs llama-cpp-python.
    python bench/iq4_quality.py [--models smollm2] [--chunks 8] [--threads 2] [--write]
"""
import argparse
import filecmp
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, ".work", "iq4_quality")
CORPORA = os.path.join(HERE, "..", "..", "shared", "corpora")
sys.path.insert(0, HERE)

import preset_types  # noqa: E402  (bench/ is not a package; the model sources live there)

TYPES = ("IQ4_NL", "IQ4_XS")
WHO = ("qconv", "llama.cpp")


def quantize(src, type_name, name, threads):
    """{who: path} of type_name made from src by qconv and by llama.cpp."""
    import llamacpp_oracle
    os.makedirs(OUT, exist_ok=True)
    paths = {who: os.path.join(OUT, f"{name}-{type_name}-{who}.gguf") for who in WHO}
    subprocess.run(["qconv", "quantize", src, paths["qconv"], type_name, "--threads", str(threads), "--force"],
                   check=True, stderr=subprocess.DEVNULL)
    llamacpp_oracle.quantize(src, paths["llama.cpp"], type_name, n_threads=threads)
    return paths


def errors(src, path):
    """{tensor: (type, sum of squared errors, n)} for every tensor whose type differs from the source's."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from kvant.formats.gguf_file import GGUFFile
    out = {}
    with GGUFFile(src) as s, GGUFFile(path) as q:
        for name, info in q.tensors.items():
            ref = s.tensors[name]
            if info.ggml_type == ref.ggml_type:
                continue
            w = dequantize(s.raw(name), GGMLQuantizationType(ref.ggml_type.id)).reshape(ref.shape)
            x = dequantize(q.raw(name), GGMLQuantizationType(info.ggml_type.id)).reshape(info.shape)
            d = (x.astype(np.float64) - w)
            out[name] = (info.ggml_type.name, float(np.sum(d * d)), d.size)
    return out


def perplexity(path, lang, chunks, threads):
    r = subprocess.run(["qrun", "perplexity", path, "-f", os.path.join(CORPORA, f"{lang}.txt"), "-c", "512",
                        "--chunks", str(chunks), "-t", str(threads), "--json"], check=True, capture_output=True,
                       text=True)
    return json.loads(r.stdout)["ppl"]


def measure(name, src, type_name, chunks, threads):
    paths = quantize(src, type_name, name, threads)
    same = filecmp.cmp(paths["qconv"], paths["llama.cpp"], shallow=False)
    err = {who: errors(src, p) for who, p in paths.items()}
    ours, theirs = err["qconv"], err["llama.cpp"]
    rmse = {who: {n: np.sqrt(e / k) for n, (_, e, k) in err[who].items()} for who in WHO}
    ratios = {n: rmse["qconv"][n] / rmse["llama.cpp"][n] if rmse["llama.cpp"][n] > 0 else 1.0 for n in ours}
    worst = max(ratios, key=ratios.get)
    total = {who: np.sqrt(sum(e for _, e, _ in err[who].values()) / sum(k for _, _, k in err[who].values()))
             for who in WHO}
    ppl = {}
    for lang in ("en", "ru"):
        ppl["qconv", lang] = perplexity(paths["qconv"], lang, chunks, threads)
        ppl["llama.cpp", lang] = ppl["qconv", lang] if same else perplexity(paths["llama.cpp"], lang, chunks, threads)
    row = {
        "model": preset_types.convert_speed.LABELS[name], "type": type_name, "same": same,
        "n": len(ours), "types": sorted({t for t, _, _ in ours.values()}),
        "le": int(sum(rmse["qconv"][n] <= rmse["llama.cpp"][n] for n in ours)),
        "worst": (worst, ratios[worst]), "total": total, "ppl": ppl,
        "equal_types": all(ours[n][0] == theirs[n][0] for n in ours) and ours.keys() == theirs.keys(),
    }
    print(json.dumps({k: (str(v) if k == "ppl" else v) for k, v in row.items()}, default=float), flush=True)
    if same:
        for p in paths.values():
            os.remove(p)
    return row


def table(rows):
    lines = ["| model | preset | same bytes | tensors quantized (types) | qconv RMSE <= llama.cpp's | worst ratio "
             "qconv / llama.cpp | RMSE of all quantized weights qconv / llama.cpp | PPL en qconv / llama.cpp | "
             "PPL ru qconv / llama.cpp |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w, ratio = r["worst"]
        worst = "1 (every tensor the same)" if r["same"] else f"{ratio:.4f} (`{w}`)"
        p = r["ppl"]
        lines.append(
            f"| {r['model']} | {r['type']} | {'yes' if r['same'] else 'no'} | {r['n']} ({', '.join(r['types'])}) | "
            f"{r['le']} of {r['n']} | {worst} | {r['total']['qconv']:.6g} / {r['total']['llama.cpp']:.6g}"
            f" | {p['qconv', 'en']:.4f} / {p['llama.cpp', 'en']:.4f} | {p['qconv', 'ru']:.4f} / "
            f"{p['llama.cpp', 'ru']:.4f} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="smollm2")
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="rewrite the IQ4 QUALITY section of bench/RESULTS.md")
    args = ap.parse_args()
    rows = [measure(name, preset_types.source(name), t, args.chunks, args.threads)
            for name in args.models.split(",") for t in TYPES]
    body = table(rows)
    print(body)
    if args.write:
        import llamacpp_oracle
        from results import update_section
        cmd = f"python bench/iq4_quality.py --models {args.models} --chunks {args.chunks} --threads {args.threads}"
        update_section("IQ4 QUALITY", (
            "IQ4_NL / IQ4_XS by `qconv quantize` and by llama.cpp's llama_model_quantize (llama-cpp-python "
            f"{llamacpp_oracle.version()}) from the same F32 GGUF (bench/preset_types.py's inputs). RMSE: per tensor "
            "the preset quantizes, dequantized by the gguf package, against the F32 weights; ratio > 1 means qconv's "
            f"error is larger. Perplexity: `qrun perplexity FILE -f en.txt|ru.txt -c 512 --chunks {args.chunks}` "
            "(../shared/corpora); byte-identical files are scored once.\n"
            f"Command: `{cmd} --write`\n\n" + body))


if __name__ == "__main__":
    main()
