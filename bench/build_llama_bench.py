"""Build llama.cpp's own tools once into bench/.work/llama.cpp-build/bin/: llama-bench (speed), and llama-quantize,
llama-imatrix and llama-perplexity (the low-bit files and their reference perplexities, bench/iq_reference.py).

The source is the vendor/llama.cpp tree of the llama-cpp-python sdist from PyPI (pip downloads it; about 8 minutes
to build llama-bench on 2 cores, a few more for the others), built with -DGGML_NATIVE=ON so it uses every
instruction set of this CPU.
    python bench/build_llama_bench.py [TARGET ...]      (default: all four; llama-embedding for
                                                        tests/make_embedding_fixtures.py too)
"""
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


TOOLS = ("llama-bench", "llama-quantize", "llama-imatrix", "llama-perplexity")


def main(targets=TOOLS):
    src = source_tree()
    subprocess.run(["cmake", "-S", src, "-B", BUILD, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=ON",
                    "-DLLAMA_BUILD_SERVER=OFF"], check=True)
    subprocess.run(["cmake", "--build", BUILD, "--target", *targets, "-j", str(os.cpu_count() or 2)], check=True)
    for target in targets:
        print(os.path.join(BUILD, "bin", target))


if __name__ == "__main__":
    main(tuple(sys.argv[1:]) or TOOLS)
