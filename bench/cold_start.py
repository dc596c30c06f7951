r"""Cold start as a new user meets it: `qrun chat` on a pseudo-terminal from empty model and numba caches, then again
warm, timed to the chat prompt and from the prompt to the first token of the first answer.

Per model, in one run: fresh directories for KVANT_CACHE (models) and NUMBA_CACHE_DIR (compiled kernels); the model
fetched first (timed on its own: it is the network's time, not kvant's), then `qrun chat MODEL -t THREADS` twice,
cold and warm. The question is typed the moment the prompt shows (a person takes longer, so the figures are the
worst case); the answer's first byte is its first token (kvant's own lines on stderr, the compile notices, are not
the answer).

    python bench/cold_start.py [--threads 2] [--models smollm2,gemma3-270m] [--no-write]
"""
import argparse
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from results import publish  # noqa: E402

QUESTION = b"Hello! Who are you?\n"
NOTICE = b"kvant: "
TIMEOUT = 600


def _read_until(fd, seen: bytearray, needle: bytes, after: int, deadline: float) -> int:
    """Read the terminal into seen until needle shows past `after`; where it ends."""
    while (at := seen.find(needle, after)) < 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {needle!r}: the terminal shows {bytes(seen[-500:])!r}")
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"qrun chat ended: {bytes(seen[-500:])!r}")
            seen += chunk
    return at + len(needle)


def chat_timings(model, threads, env, log):
    """(seconds to the prompt, seconds from typing the question to the answer's first byte)."""
    argv = [sys.executable, "-m", "kvant.runtime.cli", "chat", model, "-t", str(threads), "-n", "16"]
    start = time.monotonic()
    pid, fd = pty.fork()
    if pid == 0:                # the child: its stdin, stdout and stderr the terminal
        os.execvpe(argv[0], argv, env)
    seen = bytearray()
    deadline = start + TIMEOUT
    try:
        at = _read_until(fd, seen, b"> ", 0, deadline)
        to_prompt = time.monotonic() - start
        os.write(fd, QUESTION)
        asked = time.monotonic()
        echoed = _read_until(fd, seen, QUESTION.rstrip(b"\n") + b"\r\n", at, deadline)
        while not _answer_begun(seen[echoed:]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer: the terminal shows {bytes(seen[-500:])!r}")
            if select.select([fd], [], [], 0.02)[0]:
                seen += os.read(fd, 65536)
        return to_prompt, time.monotonic() - asked
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
        with open(log, "ab") as f:
            f.write(bytes(seen))


def _answer_begun(after_question: bytes) -> bool:
    """Whether the terminal shows a byte of the answer past the question: anything but kvant's own lines (the
    compile notices, on stderr, share the terminal)."""
    for line in after_question.split(b"\n"):
        text = line.strip(b"\r")
        if not text or text.startswith(NOTICE):
            continue
        if NOTICE.startswith(text) and not line.endswith(b"\r"):
            return False        # perhaps a notice still being written
        return True
    return False


def measure(model, threads):
    root = tempfile.mkdtemp(prefix="kvant-cold-")
    env = {**os.environ, "KVANT_CACHE": os.path.join(root, "models"), "NUMBA_CACHE_DIR": os.path.join(root, "numba")}
    env.pop("KVANT_CPU_PATH", None)
    log = os.path.join(root, "stderr.log")
    try:
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", f"from kvant.runtime.model_cache import resolve_model; "
                                              f"resolve_model({model!r}, progress=False)"], env=env, check=True)
        fetch = time.monotonic() - t0
        cold = chat_timings(model, threads, env, log)
        warm = chat_timings(model, threads, env, log)
        with open(log, encoding="utf-8", errors="replace") as f:
            compiles = f.read().count("kvant: compiled")
        return fetch, cold, warm, compiles
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="smollm2,gemma3-270m")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    args = ap.parse_args()
    from kvant.formats import host
    rows = []
    for model in args.models.split(","):
        fetch, (cold_prompt, cold_first), (warm_prompt, warm_first), compiles = measure(model, args.threads)
        rows.append(f"| {model} | {fetch:.1f} | {cold_prompt:.1f} | {cold_first:.1f} | {cold_prompt + cold_first:.1f} "
                    f"| {warm_prompt:.1f} | {warm_first:.2f} | {compiles} |")
        print(rows[-1], flush=True)
    body = (f"`python bench/cold_start.py --threads {args.threads} --models {args.models}`: `qrun chat` on a "
            f"pseudo-terminal, {args.threads} threads, kernel path {host.CPU_PATH}; seconds. Cold: empty model and "
            f"numba caches (the fetch timed on its own, before); warm: the same caches again. The question is typed "
            f"the moment the prompt shows; first token: from typing it to the answer's first byte.\n\n"
            "| model | fetch | cold: to prompt | cold: prompt to first token | cold: to first token | "
            "warm: to prompt | warm: prompt to first token | compiles |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    publish("cold start", body, write=not args.no_write)


if __name__ == "__main__":
    main()
