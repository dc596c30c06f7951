"""Hugging Face directory -> Q4_K_M GGUF in one step (`qconv to-gguf HF_DIR -t Q4_K_M`) against llama.cpp's two
(convert_hf_to_gguf.py --outtype bf16, then llama-quantize Q4_K_M), in the same run on the same machine: wall time
and peak resident memory of each process, and whether the two output files are the same bytes.

The checkpoint is bf16 (safetensors), so --outtype bf16 is lossless and the quickest thing llama.cpp's converter can
write: its output, requantized, equals the result of --outtype f32 followed by llama-quantize.

Needs, all once:
  - the HF directories bench/.work/hf/{smollm2,gemma3}: made if missing by ../shared/fixtures/make_hf_real.py
    (torch and transformers; ~2 min) from bench/.work/SmolLM2-135M-Instruct-F32.gguf (bench/models.py) and the
    shipped gemma-3-270m Q4_K_M. gemma's has only tokenizer.json (a SentencePiece-style BPE, which neither
    converter reads), so this script writes its tokenizer.model from the GGUF's vocabulary (see gemma_tokenizer_model);
  - llama.cpp's source from the llama-cpp-python sdist (bench/build_llama_bench.py unpacks it): convert_hf_to_gguf.py
    runs with this python and its own gguf-py; it also imports torch, transformers, sentencepiece, numpy (its
    requirements pin torch 2.11 / transformers 4.57; the versions installed here convert these two models fine);
  - llama-quantize, built here into bench/.work/llama.cpp-build if missing (same cmake setup as llama-bench).

Peak RSS is each process's own ru_maxrss (os.wait4). The limit the converter issue sets is 2x the largest tensor
+ 500 MB; the table checks it with the tensor as float32 (the form a quantizer works on) and, stricter, as stored
(qconv converts a tensor in slabs of rows, so it never holds a float32 copy of the whole).
    python bench/convert_speed.py [--models smollm2,gemma3] [--reps 2] [--threads 2] [--write]
"""
import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, ".work")
HF = os.path.join(WORK, "hf")
OUT = os.path.join(WORK, "convert_speed")
MAKE_HF_REAL = os.path.join(HERE, "..", "..", "shared", "fixtures", "make_hf_real.py")
sys.path.insert(0, HERE)

MODELS = ("smollm2", "gemma3")
LABELS = {"smollm2": "SmolLM2-135M-Instruct", "gemma3": "gemma-3-270m"}
PRESET = "Q4_K_M"


# ---- inputs -----------------------------------------------------------------------------------------------------
def source_gguf(name):
    """The GGUF file make_hf_real.py rebuilds model `name` from."""
    import models
    return models.smollm2("F32") if name == "smollm2" else models.gemma3()


def hf_dir(name):
    """bench/.work/hf/<name>: a bf16 Hugging Face checkpoint of the model (made once)."""
    path = os.path.join(HF, name)
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        src = os.path.join(HF, "src")  # make_hf_real.py reads fixed file names from one directory
        os.makedirs(src, exist_ok=True)
        for fn, model in (("smol-f32.gguf", "smollm2"), ("gemma-3-270m-q4_k_m.gguf", "gemma3")):
            link = os.path.join(src, fn)
            if not os.path.lexists(link):
                os.symlink(os.path.abspath(source_gguf(model)), link)
        subprocess.run([sys.executable, os.path.abspath(MAKE_HF_REAL), src, HF], check=True)
    if name == "gemma3" and not os.path.exists(os.path.join(path, "tokenizer.model")):
        gemma_tokenizer_model(source_gguf("gemma3"), os.path.join(path, "tokenizer.model"))
    return path


def gemma_tokenizer_model(gguf_path, out):
    """A SentencePiece tokenizer.model with the GGUF's pieces, scores and token types (llama.cpp's types are
    SentencePiece's enum), BPE with byte fallback and Gemma's normalizer (no dummy prefix, spaces escaped as U+2581).
    Both converters read pieces, scores and types back from it, so they write the GGUF's vocabulary again."""
    from sentencepiece import sentencepiece_model_pb2 as sp

    from kvant.formats.gguf_file import GGUFFile
    with GGUFFile(gguf_path) as g:
        md = g.metadata
        tokens, scores, types = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.scores"], md["tokenizer.ggml.token_type"]
        ids = {k: int(md[f"tokenizer.ggml.{k}_token_id"]) for k in ("unknown", "bos", "eos", "padding")}
    m = sp.ModelProto()
    for text, score, kind in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece, p.score, p.type = text, float(score), int(kind)
    t = m.trainer_spec
    t.model_type = sp.TrainerSpec.BPE
    t.vocab_size = len(tokens)
    t.byte_fallback = True
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = ids["unknown"], ids["bos"], ids["eos"], ids["padding"]
    n = m.normalizer_spec
    n.name = "identity"
    n.add_dummy_prefix = False
    n.remove_extra_whitespaces = False
    n.escape_whitespaces = True
    tmp = out + ".partial"
    with open(tmp, "wb") as f:
        f.write(m.SerializeToString())
    os.replace(tmp, out)


def largest_tensor(path):
    """(name, shape, bytes as stored, bytes as float32) of the checkpoint's largest tensor."""
    from kvant.convert.safetensors_io import checkpoint_files, read_header
    e = max((e for f in checkpoint_files(path) for e in read_header(f)), key=lambda e: e.n_elements)
    return e.name, e.shape, e.nbytes, 4 * e.n_elements


def llama_cpp_source():
    import build_llama_bench
    return build_llama_bench.source_tree()


def llama_quantize():
    """bench/.work/llama.cpp-build/bin/llama-quantize, built (as llama-bench is) if missing."""
    import build_llama_bench
    exe = os.path.join(build_llama_bench.BUILD, "bin", "llama-quantize")
    if not os.path.exists(exe):
        if not os.path.exists(os.path.join(build_llama_bench.BUILD, "CMakeCache.txt")):
            build_llama_bench.main()  # configures the build dir (and builds llama-bench)
        subprocess.run(["cmake", "--build", build_llama_bench.BUILD, "--target", "llama-quantize", "-j",
                        str(os.cpu_count() or 2)], check=True)
    return exe


# ---- measuring --------------------------------------------------------------------------------------------------
@dataclass
class Run:
    seconds: float
    rss_bytes: int


def run(cmd, log):
    """Run cmd to completion; its wall time and peak RSS (ru_maxrss of that process)."""
    with open(log, "w") as f:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with {p.returncode}; see {log}")
    return Run(seconds, usage.ru_maxrss * 1024)


def steps(name, threads):
    """The two pipelines as {pipeline: [(step label, command)]} and their final output files."""
    hf, src = hf_dir(name), llama_cpp_source()
    bf16, lq, kq = (os.path.join(OUT, f"{name}-{s}.gguf") for s in ("llamacpp-BF16", f"llamacpp-{PRESET}",
                                                                  f"qconv-{PRESET}"))
    pipelines = {
        "llama.cpp": [
            ("convert_hf_to_gguf.py --outtype bf16",
             [sys.executable, os.path.join(src, "convert_hf_to_gguf.py"), hf, "--outfile", bf16, "--outtype", "bf16"]),
            (f"llama-quantize {PRESET}", [llama_quantize(), bf16, lq, PRESET, str(threads)]),
        ],
        "kvant": [
            (f"qconv to-gguf -t {PRESET}", [shutil.which("qconv") or "qconv", "to-gguf", hf, "-o", kq, "-t", PRESET,
                                            "--threads", str(threads), "--force"]),
        ],
    }
    return pipelines, lq, kq


def _same_value(a, b):
    import numpy as np
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def compare(a, b):
    """'yes' if the files are the same bytes, else what differs (tensors and metadata keys)."""
    import filecmp

    from kvant.formats.gguf_file import GGUFFile
    if filecmp.cmp(a, b, shallow=False):
        return "yes"
    with GGUFFile(a) as fa, GGUFFile(b) as fb:
        ta, tb = fa.tensors, fb.tensors
        same = [n for n in ta if n in tb and ta[n].ggml_type == tb[n].ggml_type and
                fa.raw(n).tobytes() == fb.raw(n).tobytes()]
        keys = sorted(k for k in set(fa.metadata) | set(fb.metadata)
                      if not _same_value(fa.metadata.get(k), fb.metadata.get(k)))
        order = list(ta) == list(tb)
    parts = [f"no: tensors {len(same)}/{len(ta)} identical" + ("" if order else " (order differs)")]
    if keys:
        parts.append("metadata differs in " + ", ".join(f"`{k}`" for k in keys))
    return "; ".join(parts)


def bench(name, reps, threads):
    os.makedirs(OUT, exist_ok=True)
    pipelines, lq, kq = steps(name, threads)
    times = {(p, label): [] for p, ss in pipelines.items() for label, _ in ss}
    rss = dict.fromkeys(times, 0)
    for rep in range(reps):
        order = list(pipelines) if rep % 2 == 0 else list(pipelines)[::-1]  # interleaved, alternating first
        for p in order:
            for label, cmd in pipelines[p]:
                r = run(cmd, os.path.join(OUT, f"{name}-{p}-{len(times[p, label])}.log"))
                times[p, label].append(r.seconds)
                rss[p, label] = max(rss[p, label], r.rss_bytes)
                print(f"{name} {p:9s} {label:40s} {r.seconds:7.2f} s  {r.rss_bytes / 1e6:7.0f} MB", flush=True)
    return pipelines, times, rss, compare(kq, lq)


def table(results, reps):
    rows = ["| model | pipeline | step | wall s (best of %d) | all runs s | peak RSS MB |" % reps,
            "|---|---|---|---|---|---|"]
    summary = ["| model | largest tensor | as stored MB | as f32 MB | qconv peak RSS MB | limit 2x f32 + 500 MB "
               "| limit 2x stored + 500 MB | qconv / llama.cpp time | same bytes as llama.cpp |",
               "|---|---|---|---|---|---|---|---|---|"]
    for name, (pipelines, times, rss, same, big) in results.items():
        totals = {}
        for p, ss in pipelines.items():
            for label, _ in ss:
                ts = times[p, label]
                rows.append(f"| {LABELS[name]} | {p} | `{label}` | {min(ts):.2f} | "
                            f"{' / '.join(f'{t:.2f}' for t in ts)} | {rss[p, label] / 1e6:.0f} |")
            if len(ss) > 1:
                per_rep = [sum(times[p, label][i] for label, _ in ss) for i in range(reps)]
                peak = max(rss[p, label] for label, _ in ss)
                rows.append(f"| {LABELS[name]} | {p} | **total** | **{min(per_rep):.2f}** | "
                            f"{' / '.join(f'{t:.2f}' for t in per_rep)} | {peak / 1e6:.0f} (max) |")
            totals[p] = min(sum(times[p, label][i] for label, _ in ss) for i in range(reps))
        t_name, shape, stored, f32 = big
        k_rss = max(rss["kvant", label] for label, _ in pipelines["kvant"])
        limits = [f"{lim / 1e6:.0f}: {'within' if k_rss < lim else '**over**'}"
                  for lim in (2 * f32 + 500e6, 2 * stored + 500e6)]
        summary.append(f"| {LABELS[name]} | `{t_name}` {'x'.join(map(str, shape))} | {stored / 1e6:.0f} | "
                       f"{f32 / 1e6:.0f} | {k_rss / 1e6:.0f} | {' | '.join(limits)} | "
                       f"{totals['kvant'] / totals['llama.cpp']:.2f}x | {same} |")
    return "\n".join(rows) + "\n\n" + "\n".join(summary) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="rewrite the CONVERT SPEED section of bench/RESULTS.md")
    args = ap.parse_args()
    names = args.models.split(",")
    results = {}
    for name in names:
        big = largest_tensor(hf_dir(name))
        results[name] = (*bench(name, args.reps, args.threads), big)
    body = table(results, args.reps)
    print(body)
    if args.write:
        import llamacpp_oracle
        from results import update_section
        cmd = f"python bench/convert_speed.py --models {args.models} --reps {args.reps} --threads {args.threads}"
        load = os.getloadavg()[0]
        update_section("CONVERT SPEED", (
            f"Hugging Face bf16 safetensors -> {PRESET} GGUF. kvant: one process, `qconv to-gguf HF_DIR -t {PRESET}`. "
            f"llama.cpp (llama-cpp-python {llamacpp_oracle.version()}'s source): `convert_hf_to_gguf.py "
            f"--outtype bf16` (lossless for a bf16 checkpoint) then `llama-quantize {PRESET}` (built -DGGML_NATIVE=ON), "
            f"{args.threads} threads where a tool takes a thread count. The HF directories are rebuilt from the GGUF "
            "models by ../shared/fixtures/make_hf_real.py (gemma's tokenizer.model from its GGUF vocabulary). Wall "
            "time per process including interpreter start and imports (qconv's numba kernels come from numba's "
            "on-disk cache); peak RSS = the process's ru_maxrss.\n"
            f"Command: `{cmd} --write` (load average at the end: {load:.1f} on 2 CPUs)\n\n" + body))


if __name__ == "__main__":
    main()
