"""Prefill's matmul against the alternative the speed issue names: decode a tile of weight rows to float32 and hand
it to BLAS (numpy's OpenBLAS), tile after tile, on the same matrices, tokens and threads. Writes the PREFILL BLAS
section of bench/RESULTS.md.

    python bench/prefill_blas.py [--threads 2] [--tokens 128,512] [--reps 5]

Per weight matrix of a real file (SmolLM2-135M: attention output 576x576, ffn_up 1536x576, ffn_down 576x1536; the
1.1B llama: ffn_up 5632x2048), milliseconds for out[n, rows] = x[n, cols] @ W.T, best of --reps:
- kvant: what prefill runs: the integer GEMM where the type has one on this CPU (activations quantized per call
  included), else QMatrix.matmul's float GEMM;
- tile + BLAS: kvant.formats' numba dequantizer on 256 rows at a time, then one sgemm per tile;
- whole + BLAS: the matrix dequantized once beforehand (not timed) and one sgemm: the floor BLAS could reach if the
  decoding were free (it needs the float copy of the weights the runtime never makes).
BLAS and numba get the same thread count (OPENBLAS_NUM_THREADS is set before numpy loads). Each side runs in its own
process, the BLAS one with GOMP_SPINCOUNT=0: numba's OpenMP workers otherwise spin after each dequantization and
OpenBLAS's after each sgemm, each stealing the other's cores (measured: 10-40x slower when mixed in one process).
"""
import argparse
import json
import os
import subprocess
import sys

from bandwidth import best_seconds

HERE = os.path.dirname(os.path.abspath(__file__))
TILE_ROWS = 256
MATRICES = [  # (label, file maker, tensor)
    ("SmolLM2 {t} attn_output", "smollm2", "blk.0.attn_output.weight"),
    ("SmolLM2 {t} ffn_up", "smollm2", "blk.0.ffn_up.weight"),
    ("SmolLM2 {t} ffn_down", "smollm2", "blk.0.ffn_down.weight"),
    ("1.1B llama {t} ffn_up", "tinyllama", "blk.0.ffn_up.weight"),
]


def best_ms(fn, reps):
    return best_seconds(fn, reps) * 1e3


def measure(path, tensor, side, n_tokens, reps):
    """{method: best ms} for one side ("kvant" or "blas") on one tensor of a file, and the flop count."""
    import numpy as np
    from kvant.formats.dequant import dequantize
    from kvant.formats.gguf_file import GGUFFile
    from kvant.runtime.kernels import prepare
    with GGUFFile(path) as g:
        type_name = g.tensors[tensor].ggml_type.name
        raw = np.array(g.raw(tensor))
    rows = raw.shape[0]
    cols = raw.shape[1] // g.tensors[tensor].ggml_type.type_size * g.tensors[tensor].ggml_type.block_size
    x = np.random.default_rng(0).standard_normal((n_tokens, cols)).astype(np.float32)
    out = np.empty((n_tokens, rows), np.float32)
    if side == "kvant":
        from kvant.runtime.kernels._gemm import quantize
        qm = prepare(raw, type_name)
        if qm.gemm is None:
            return {"kvant": best_ms(lambda: qm.matmul(out, x), reps), "kvant GEMM": "float"}
        scheme, run = qm.gemm
        return {"kvant": best_ms(lambda: run(out, quantize(x, scheme), *qm.arrays), reps), "kvant GEMM": "int8"}
    whole = dequantize(raw, type_name)

    def tiles():
        for r0 in range(0, rows, TILE_ROWS):
            w = dequantize(raw[r0:r0 + TILE_ROWS], type_name)
            np.matmul(x, w.T, out=out[:, r0:r0 + w.shape[0]])

    return {"tile + BLAS": best_ms(tiles, reps), "whole + BLAS": best_ms(lambda: np.matmul(x, whole.T, out=out), reps)}


def run_side(args, path, tensor, side, n_tokens):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads))
    if side == "blas":
        env["GOMP_SPINCOUNT"] = "0"
    r = subprocess.run([sys.executable, __file__, "--side", side, "--file", path, "--tensor", tensor, "--tokens",
                        str(n_tokens), "--reps", str(args.reps), "--threads", str(args.threads)],
                       env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", default="128,512")
    ap.add_argument("--types", default="Q4_0,Q8_0,Q4_K_M")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--side", help=argparse.SUPPRESS)       # one measurement, in a child process
    ap.add_argument("--file", help=argparse.SUPPRESS)
    ap.add_argument("--tensor", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        import numba
        numba.set_num_threads(args.threads)
        print(json.dumps(measure(args.file, args.tensor, args.side, int(args.tokens), args.reps)))
        return
    sys.path.insert(0, HERE)
    import models
    from make_tinyllama import tinyllama
    from kvant.formats.gguf_file import GGUFFile
    from results import update_section
    lines = ["| matrix | type | tokens | kvant GEMM | kvant ms | tile + BLAS ms | whole + BLAS ms | kvant GFLOP/s | "
             "kvant / tile + BLAS speed |", "|---|---|---|---|---|---|---|---|---|"]
    for t in args.types.split(","):
        for label, maker, tensor in MATRICES:
            path = models.smollm2(t) if maker == "smollm2" else tinyllama(t)
            with GGUFFile(path) as g:
                info = g.tensors[tensor]
            for n in (int(v) for v in args.tokens.split(",")):
                ms = {**run_side(args, path, tensor, "kvant", n), **run_side(args, path, tensor, "blas", n)}
                flop = 2 * info.shape[0] * info.shape[1] * n
                lines.append(f"| {label.format(t=t)} {info.shape[0]}x{info.shape[1]} | {info.ggml_type.name} | "
                             f"{n} | {ms['kvant GEMM']} | {ms['kvant']:.2f} | {ms['tile + BLAS']:.2f} | {ms['whole + BLAS']:.2f} | "
                             f"{flop / ms['kvant'] / 1e6:.0f} | {ms['tile + BLAS'] / ms['kvant']:.2f}x |")
                print(lines[-1], flush=True)
    update_section("PREFILL BLAS", f"{args.threads} threads for both kvant (numba) and OpenBLAS (numpy's), each side in "
                                   f"its own process; tiles of {TILE_ROWS} rows; best of {args.reps}.\nCommand: "
                                   f"`python bench/prefill_blas.py --threads {args.threads} --tokens {args.tokens} "
                                   f"--types {args.types} --reps {args.reps}`\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
