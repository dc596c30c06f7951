"""Build llama.cpp's own tools once into bench/.work/llama.cpp-build/bin/: llama-bench (speed), and llama-quantize,
llama-imatrix and llama-perplexity (the low-bit files and their reference perplexities, bench/iq_reference.py).

The source is the vendor/llama.cpp tree of the llama-cpp-python sdist from PyPI (pip downloads it; about 8 minutes
to build llama-bench on 2 cores, a few more for the others), built with -DGGML_NATIVE=ON so it uses every
instruction set of this CPU.
    python bench/build_llama_bench.py [TARGET ...]      (default: all four; llama-embedding for
                                                        tests/make_embedding_fixtures.py too)
    python bench/build_llama_bench.py --avx2 [TARGET ...]
With --avx2 it builds for a CPU with AVX2, FMA, F16C and BMI2 and nothing newer (GGML_NATIVE=OFF, no AVX-512, no
AVX-VNNI) into bench/.work/llama.cpp-build-avx2/: the llama.cpp an AVX2 PC runs, for a forced-AVX2 kvant table on an
AVX-512 machine (`KVANT_CPU_PATH=avx2 python bench/speed.py --llama-bench <that build's llama-bench> ...`).
"""
import argparse
import glob
import os
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
WORK = os.path.join(HERE, ".work")
BUILD = os.path.join(WORK, "llama.cpp-build")


def source_tree():
    sdists = glob.glob(os.path.join(WORK, "sdist", "llama_cpp_python-*.tar.gz"))
    if not sdists:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--dest", os.path.join(WORK, "sdist"), "llama-cpp-python"], check=True)
        sdists = glob.glob(os.path.join(WORK, "sdist", "llama_cpp_python-*.tar.gz"))
    sdist = sorted(sdists)[-1]
    root = sdist[:-len(".tar.gz")]
    if not os.path.isdir(root):
        with tarfile.open(sdist) as tar:
            tar.extractall(os.path.dirname(sdist), filter="data")
    return os.path.join(root, "vendor", "llama.cpp")


BUILD_AVX2 = os.path.join(WORK, "llama.cpp-build-avx2")
TOOLS = ("llama-bench", "llama-quantize", "llama-imatrix", "llama-perplexity")
NATIVE = ("-DGGML_NATIVE=ON",)
AVX2_ONLY = ("-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
             "-DGGML_BMI2=ON", "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX512=OFF", "-DGGML_AVX512_VNNI=OFF",
             "-DGGML_AVX512_VBMI=OFF", "-DGGML_AVX512_BF16=OFF")


def main(targets=TOOLS, build=BUILD, isa=NATIVE):
    src = source_tree()
    subprocess.run(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release", *isa,
                    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=ON",
                    "-DLLAMA_BUILD_SERVER=OFF"], check=True)
    subprocess.run(["cmake", "--build", build, "--target", *targets, "-j", str(os.cpu_count() or 2)], check=True)
    for target in targets:
        print(os.path.join(build, "bin", target))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Build llama.cpp's tools into bench/.work/.")
    ap.add_argument("--avx2", action="store_true", help="for AVX2 CPUs only, into llama.cpp-build-avx2/ "
                                                        "(default targets: llama-bench)")
    ap.add_argument("targets", nargs="*", help=f"cmake targets (default: {' '.join(TOOLS)})")
    args = ap.parse_args()
    if args.avx2:
        main(tuple(args.targets) or ("llama-bench",), BUILD_AVX2, AVX2_ONLY)
    else:
        main(tuple(args.targets) or TOOLS)
