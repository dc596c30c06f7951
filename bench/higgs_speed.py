"""HIGGS speed: kvant's HG4, HG3, HG2 against kvant's own Q4_K_M on the same model, interleaved in one run (llama.cpp
does not run HIGGS files, so kvant's Q4_K_M is the reference the issue names). `qrun bench` on each file, --reps
rounds; the machine's read bandwidth measured in each round beside them.

    python bench/higgs_speed.py [--threads 2] [--reps 3] [--types HG4,HG3,HG2] [--no-write] [--section NAME]

Default model: the random TinyLlama-shaped 1.1B llama (bench/make_tinyllama.py quantizes it to each type), the
shape the issue's speed criterion names; --smollm2 adds SmolLM2-135M-Instruct (its F32 conversion in bench/.work).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from results import path_line, path_section, publish  # noqa: E402
from speed import bandwidth, best, file_bytes_per_token, kvant_bench  # noqa: E402

REFERENCE = "Q4_K_M"


def files(args):
    from make_tinyllama import tinyllama
    out = [("random 1.1B llama", t, tinyllama(t)) for t in [REFERENCE] + args.types]
    if args.smollm2:
        from higgs_quality import base_f32
        f32 = base_f32()
        out += [("SmolLM2-135M", t, requantized(f32, t)) for t in [REFERENCE] + args.types]
    return out


def requantized(f32, type_name):
    """SmolLM2 in type_name, made by qconv from its F32 (llama-quantize's bytes) into bench/.work once."""
    import subprocess
    path = os.path.join(HERE, ".work", f"smollm2-{type_name}.gguf")
    if not os.path.exists(path):
        subprocess.run([sys.executable, "-m", "kvant.convert.cli", "quantize", f32, path, type_name], check=True)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--types", default="HG4,HG3,HG2")
    ap.add_argument("-p", "--n-prompt", default="128")
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("--smollm2", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--section", default="HIGGS SPEED", help="the RESULTS.md section (per path) the table goes to")
    args = ap.parse_args()
    args.types = [t for t in args.types.split(",") if t]
    todo = files(args)
    runs = {(model, t): [] for model, t, _ in todo}
    bw = []
    env = dict(os.environ)
    for _ in range(args.reps):
        for model, t, path in todo:
            runs[(model, t)].append(kvant_bench(path, args, env))
        bw.append(bandwidth(None, args, env))
    pp = f"pp{args.n_prompt}_tok_s"
    rows = ["| model | type | bits/weight | MB read a token | pp" + args.n_prompt + " tok/s | tg" + str(args.n_gen) +
            " tok/s | GB/s in tg | tg vs " + REFERENCE + " | pp vs " + REFERENCE + " |", "|---" * 9 + "|"]
    for model, t, path in todo:
        r = best(runs[(model, t)])
        ref = best(runs[(model, REFERENCE)])
        if "error" in r:
            rows.append(f"| {model} | {t} | | | error: {r['error']} | | | | |")
            continue
        mb = file_bytes_per_token(path) / 1e6
        from kvant.formats.gguf_file import open_gguf
        with open_gguf(path) as g:
            bpw = 8 * sum(i.nbytes for i in g.tensors.values()) / sum(i.n_rows * i.shape[-1]
                                                                     for i in g.tensors.values())
        rows.append(f"| {model} | {t} | {bpw:.2f} | {mb:.0f} | {r[pp]:.1f} | {r['tg_tok_s']:.1f} | "
                    f"{mb * r['tg_tok_s'] / 1e3:.1f} | {r['tg_tok_s'] / ref['tg_tok_s']:.2f}x | "
                    f"{r[pp] / ref[pp]:.2f}x |")
    gbs = [b["gb_s"] for b in bw if "gb_s" in b]
    command = (f"python bench/higgs_speed.py --threads {args.threads} --reps {args.reps} --types "
               f"{','.join(args.types)}" + (" --smollm2" if args.smollm2 else "")
               + ("" if args.section == "HIGGS SPEED" else f" --section '{args.section}'"))
    body = "\n".join([f"Command: `{command}`", "", path_line() + f"; {args.threads} threads, best of {args.reps} "
                      "interleaved rounds", "", *rows, "",
                      f"Read bandwidth in the same rounds (bench/bandwidth.py): "
                      f"{', '.join(f'{g:.1f}' for g in gbs)} GB/s."])
    print(body)
    publish(path_section(args.section), body, write=not args.no_write)


if __name__ == "__main__":
    main()
