"""Build llama.cpp's own C++ benchmark, llama-bench, once into bench/.work/llama.cpp-build/bin/.

The source is the vendor/llama.cpp tree of the llama-cpp-python sdist from PyPI (pip downloads it; about 8 minutes
to build on 2 cores), built with -DGGML_NATIVE=ON so it uses every instruction set of this CPU.
    python bench/build_llama_bench.py
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


def main():
    src = source_tree()
    subprocess.run(["cmake", "-S", src, "-B", BUILD, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                    "-DLLAMA_BUILD_SERVER=OFF"], check=True)
    subprocess.run(["cmake", "--build", BUILD, "--target", "llama-bench", "-j", str(os.cpu_count() or 2)],
                   check=True)
    print(os.path.join(BUILD, "bin", "llama-bench"))


if __name__ == "__main__":
    main()
