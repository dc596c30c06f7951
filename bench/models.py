"""The model files the benchmarks compare on, made once into bench/.work/ (ignored by git).

SmolLM2-135M-Instruct comes as Q4_1 (kvant's `smollm2`); llama.cpp requantizes it to F32 (lossless: every Q4_1 and
Q8_0 value is exact in f32) and from that F32 to every other type, so kvant and llama.cpp read the same bytes.
Gemma 3 270M Q4_K_M is used as shipped.
    python bench/models.py            # makes whatever is missing, prints the paths
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, ".work")
sys.path.insert(0, HERE)

SMOLLM2_TYPES = ["F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K",
                 "IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0"]


LLAMA_QUANTIZE = os.path.join(WORK, "llama.cpp-build", "bin", "llama-quantize")


def llama_quantize(src, dst, type_name):
    """llama.cpp's quantization of src to type_name: through llama-cpp-python where it is installed, else the
    llama-quantize that bench/build_llama_bench.py builds (the same library code)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        import subprocess
        if not os.path.exists(LLAMA_QUANTIZE):
            raise SystemExit("needs llama-cpp-python (pip install llama-cpp-python) or llama-quantize "
                             "(python bench/build_llama_bench.py llama-quantize)")
        subprocess.run([LLAMA_QUANTIZE, "--allow-requantize", src, dst, type_name, "2"], check=True,
                       stdout=subprocess.DEVNULL)
        return
    import llamacpp_oracle as oracle
    oracle.quantize(src, dst, type_name)


def smollm2(type_name):
    """Path of SmolLM2-135M-Instruct in type_name, made with llama.cpp if missing."""
    from kvant.runtime.model_cache import resolve_model
    os.makedirs(WORK, exist_ok=True)
    f32 = os.path.join(WORK, "SmolLM2-135M-Instruct-F32.gguf")
    if not os.path.exists(f32):
        _atomic(lambda tmp: llama_quantize(resolve_model("smollm2"), tmp, "F32"), f32)
    if type_name == "F32":
        return f32
    path = os.path.join(WORK, f"SmolLM2-135M-Instruct-{type_name}.gguf")
    if not os.path.exists(path):
        _atomic(lambda tmp: llama_quantize(f32, tmp, type_name), path)
    return path


def gemma3():
    from kvant.runtime.model_cache import resolve_model
    return resolve_model("gemma3-270m")


def _atomic(make, path):
    tmp = path + ".partial"
    make(tmp)
    os.replace(tmp, path)


if __name__ == "__main__":
    for t in SMOLLM2_TYPES:
        print(smollm2(t))
    print(gemma3())
