"""The machine kvant runs on: which kernel path is in force, and where numba keeps what it compiled.

A kernel path is an instruction set the integer kernels are written for (runtime/kernels/_isa.py). It is chosen once
per process, best first, from what LLVM reports about the host, or forced with KVANT_CPU_PATH to any path the host
can execute (an AVX-512 machine runs the AVX2 path too). "float" is the float kernels alone, for CPUs with none.

numba's on-disk cache goes under the user's cache directory, in a folder per kvant version, source and path, set
before any kernel module is compiled:
- not beside the installed modules (numba's default): pip leaves those files behind when it uninstalls kvant, and
  the left-over folder is then imported as an empty namespace package in place of an editable install;
- per path, because forcing another path changes what the same Python function compiles to, and numba's own cache
  key (signature, CPU name and features) cannot tell; numba itself refuses entries of another CPU or numba version;
- per source (a digest of kvant's own .py files), because numba checks only the file a cached function is defined
  in: a kernel that inlines helpers from another module would otherwise keep their old code after an update that
  left its own file alone (an install from git between versions, an edit in a checkout).
NUMBA_CACHE_DIR, when the user sets it, is where that folder goes instead.
"""
import hashlib
import os
from importlib import metadata

import numba  # noqa: F401  (numba.core.config below must exist, and numba reads the environment once)
from llvmlite import binding
from numba.core import config

# path -> the LLVM host features it needs (x86: avx512vnni needs BW for its byte vectors; avxvnni is the 256-bit
# VEX vpdpbusd of Alder Lake and later; every x86 path F16C for the fp16 scales; AArch64: the Armv8.6 int8 matrix
# extension's usdot, else the Armv8.2 dot product's sdot), best first
PATH_FEATURES = {
    "avx512vnni": ("avx512f", "avx512bw", "avx512vnni", "avx2", "fma", "f16c"),
    "avxvnni": ("avxvnni", "avx2", "fma", "f16c"),
    "avx2": ("avx2", "fma", "f16c"),
    "i8mm": ("neon", "dotprod", "i8mm"),
    "dotprod": ("neon", "dotprod"),
    "float": (),
}
PATHS = tuple(PATH_FEATURES)
# the features a bench table shows (what any path looks at, the HIGGS lookup's VBMI, and the ones a later path would)
REPORTED_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vnni", "avx512vbmi", "avxvnni", "neon",
                     "dotprod", "i8mm")


SOURCE_PACKAGES = ("formats", "convert", "runtime")     # kvant's folders, installed or in a checkout


class HostPathError(ValueError):
    """KVANT_CPU_PATH names no path, or one this CPU cannot execute."""


def host_features() -> frozenset:
    """The LLVM features of the CPU numba compiles for. When it compiles for another CPU (NUMBA_CPU_NAME), the ones
    NUMBA_CPU_FEATURES turns on ("+avx2,+fma,..."): what the emitted-instruction tests compile a path for; code so
    compiled is inspected, never run."""
    if config.CPU_NAME not in (None, "host"):
        return frozenset(f[1:] for f in (config.CPU_FEATURES or "").split(",") if f.startswith("+"))
    try:
        return frozenset(k for k, v in binding.get_host_cpu_features().items() if v)
    except RuntimeError:            # LLVM cannot tell on this OS (Apple silicon with some LLVM versions)
        return _apple_arm_features()


# Apple's names for the AArch64 features a path needs (sysctl hw.optional.arm.*), for when LLVM reports none
_APPLE_FEATURES = {"FEAT_DotProd": "dotprod", "FEAT_I8MM": "i8mm"}


def _apple_arm_features(sysctl=None) -> frozenset:
    """The path features of an Apple silicon Mac from sysctl (NEON is in every one); empty elsewhere. The CPU name
    LLVM compiles for (apple-m1, apple-m2, ...) implies the same features."""
    import platform
    import subprocess
    if sysctl is None:
        if platform.system() != "Darwin" or platform.machine() != "arm64":
            return frozenset()

        def sysctl(name):
            r = subprocess.run(["sysctl", "-n", f"hw.optional.arm.{name}"], capture_output=True, text=True)
            return r.stdout.strip()
    found = {"neon"}
    for name, feature in _APPLE_FEATURES.items():
        try:
            if sysctl(name) == "1":
                found.add(feature)
        except OSError:
            pass
    return frozenset(found)


def runnable_paths(features=None) -> tuple:
    """The paths this CPU can execute, best first ("float" always)."""
    features = host_features() if features is None else features
    return tuple(p for p, needed in PATH_FEATURES.items() if all(f in features for f in needed))


# what a forced path's code must do without: the features of the better paths (LLVM drops with each what depends on
# it: avx512bw, ...), and for AVX2 those Haswell and Zen 3 lack that LLVM might pick for byte shifts and the like
WITHOUT = {"avx2": ("avx512f", "avxvnni", "gfni", "vaes", "vpclmulqdq"), "avxvnni": ("avx512f",),
           "dotprod": ("i8mm",)}


def dropped_features(path: str, host: dict) -> tuple:
    """The features of WITHOUT[path] that the host has ({name: present})."""
    return tuple(f for f in WITHOUT.get(path, ()) if host.get(f))


def forced_features(path: str, host: dict) -> str | None:
    """The LLVM feature string numba compiles with when `path` is forced on a CPU that has a better one: the host's
    features ({name: present}, as LLVM reports them) less WITHOUT[path], every absent one named as such (as numba's
    own string does, so that none the CPU's LLVM name implies comes back) and the dropped ones last (a later "+"
    of a dependent would turn them on again). Without it a forced AVX2 run on an AVX-512 CPU compiles with
    AVX-512VL's 32 ymm registers and opmask blends, and measures code that no AVX2 CPU runs. None: nothing to drop."""
    drop = dropped_features(path, host)
    if not drop:
        return None
    kept = sorted(f for f, present in host.items() if present and f not in drop)
    absent = sorted(f for f, present in host.items() if not present)
    return ",".join([f"+{f}" for f in kept] + [f"-{f}" for f in absent + list(drop)])


def choose_path(forced=None, features=None) -> str:
    """The best runnable path, or the forced one if the CPU can run it."""
    runnable = runnable_paths(features)
    if not forced:
        return runnable[0]
    forced = forced.strip().lower()
    if forced not in PATH_FEATURES:
        raise HostPathError(f"KVANT_CPU_PATH={forced}: not a kernel path (known: {', '.join(PATHS)})")
    if forced not in runnable:
        raise HostPathError(f"KVANT_CPU_PATH={forced}: this CPU cannot execute it (it can: {', '.join(runnable)})")
    return forced


def cpu_model() -> str:
    """The CPU's model name as the OS reports it, with LLVM's name for its microarchitecture (for bench tables: a
    virtual machine's "AMD EPYC" is a Zen 3, 4 or 5)."""
    llvm_name = binding.get_host_cpu_name()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model")):
                    return f"{line.split(':', 1)[1].strip()} ({llvm_name})"
    except OSError:
        pass
    return llvm_name


def _version() -> str:
    try:
        return metadata.version("kvant")
    except metadata.PackageNotFoundError:
        return "dev"


def user_cache_root() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kvant")


def source_digest(root=None) -> str:
    """12 hex digits of a hash over kvant's .py files under root (default: this installation; paths and contents,
    ~4 ms)."""
    root = root or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digest = hashlib.sha1()
    for package in SOURCE_PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(root, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(f for f in files if f.endswith(".py") and not f.startswith(".")):
                path = os.path.join(folder, name)       # (an editor's lock file .#x.py may dangle)
                digest.update(os.path.relpath(path, root).encode())
                try:
                    with open(path, "rb") as f:
                        digest.update(f.read())
                except OSError:
                    pass
    return digest.hexdigest()[:12]


def numba_cache_dir(path: str) -> str:
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(user_cache_root(), "numba")
    return os.path.join(base, f"kvant-{_version()}-{source_digest()}-{path}")


try:
    CPU_PATH = choose_path(os.environ.get("KVANT_CPU_PATH"))
    PATH_ERROR = None
except HostPathError as e:          # reported by the CLIs in one line and raised by the kernels' import
    CPU_PATH, PATH_ERROR = "float", e

# a forced path below the CPU's best compiles without the better paths' features (set before numba builds its target
# machine, at its first jitted function); a user's own NUMBA_CPU_NAME / NUMBA_CPU_FEATURES stand
FORCED_WITHOUT = ()
if (os.environ.get("KVANT_CPU_PATH") and PATH_ERROR is None and CPU_PATH != runnable_paths()[0]
        and config.CPU_NAME is None and config.CPU_FEATURES is None):
    try:
        _host = {k: bool(v) for k, v in binding.get_host_cpu_features().items()}
    except RuntimeError:            # LLVM cannot tell (Apple silicon with some LLVM versions): compile as it would
        _host = {}
    config.CPU_FEATURES = forced_features(CPU_PATH, _host)
    FORCED_WITHOUT = dropped_features(CPU_PATH, _host)
# numba looks the directory up when a cached function is defined, so this must run before any kernel module
CACHE_DIR = numba_cache_dir(CPU_PATH)
config.CACHE_DIR = CACHE_DIR


def _serialize_cache_writes():
    """numba saves a new signature of a function by reading the function's index, taking the first data file name
    the index does not list, and writing both: two processes saving different signatures of one function at the
    same moment (kvant's compile-ahead helper and its parent) could take the same name, and an index entry would
    then point at the other signature's machine code. One lock file per cache folder makes each save whole."""
    try:
        import fcntl
    except ImportError:         # no POSIX locks (Windows): kvant starts no helper process there that could race
        return
    from numba.core.caching import IndexDataCacheFile

    def locked(method):
        def call(self, *args):
            os.makedirs(self._cache_path, exist_ok=True)
            with open(os.path.join(self._cache_path, ".kvant-save.lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                return method(self, *args)
        return call
    IndexDataCacheFile.save = locked(IndexDataCacheFile.save)
    IndexDataCacheFile.flush = locked(IndexDataCacheFile.flush)


_serialize_cache_writes()
