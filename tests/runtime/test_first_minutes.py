"""What a new user meets in the first minutes (issue 19): Ctrl-C and Ctrl-D in qrun chat on a real terminal (a
pseudo-terminal here), and a one-line message for each edge of the command line and the API."""
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from kvant.runtime.cli import main
from tiny_model import write_tiny_model


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class Terminal:
    """A command on a pseudo-terminal: what it wrote so far, and keys typed into it."""

    def __init__(self, argv, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:       # the child: its stdin, stdout and stderr are the terminal
            os.execvpe(argv[0], argv, env)
        self.seen = b""

    def read_until(self, needle: bytes, timeout=240.0, after=0):
        """Read until needle appears past position `after` of everything read; returns where it ends."""
        deadline = time.monotonic() + timeout
        while True:
            at = self.seen.find(needle, after)
            if at >= 0:
                return at + len(needle)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} within {timeout} s; the terminal shows: {self.seen[-2000:]!r}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:         # the child has ended
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the command ended before {needle!r}: {self.seen[-2000:]!r}")
                self.seen += chunk

    def type(self, keys: bytes):
        os.write(self.fd, keys)

    def wait(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.fd, 65536)
                except OSError:
                    pass
        os.kill(self.pid, 9)
        raise AssertionError(f"the command did not end: {self.seen[-2000:]!r}")


def test_chat_ctrl_c_stops_the_answer_and_the_chat_goes_on(tiny, tmp_path):
    # a long context and answer, so that the answer is still being written when Ctrl-C comes
    argv = [sys.executable, "-m", "kvant.runtime.cli", "chat", tiny, "-c", "16384", "-n", "16000", "-t", "1",
            "--temp", "1", "--ignore-eos"]
    term = Terminal(argv, {**os.environ, "KVANT_CACHE": str(tmp_path)})
    at = term.read_until(b"> ")
    for question in (b"hello there\n", b"and again\n"):
        term.type(question)
        started = term.read_until(question.strip(), after=at)
        time.sleep(0.3)                                       # some of the answer is out
        term.type(b"\x03")                                    # Ctrl-C
        at = term.read_until(b"[interrupted]", after=started)
        at = term.read_until(b"> ", after=at)                 # back at the prompt: the next question is read
    term.type(b"\x04")                                        # Ctrl-D at the prompt ends the chat
    assert term.wait() == 0, term.seen[-2000:]
    assert term.seen.endswith(b"\r\n"), term.seen[-200:]      # the shell's prompt starts on a new line
    assert b"Traceback" not in term.seen and b"error" not in term.seen


def test_tokenize_prints_pieces_as_text(capsys, tmp_path):
    path = write_tiny_model(tmp_path / "tiny.gguf")
    code, out, err = run(capsys, "tokenize", str(path), "-p", "the\tthe")
    assert code == 0, err
    lines = out.splitlines()
    assert all(" -> '" in line for line in lines) and "b'" not in out
    assert any("\\t" in line for line in lines)               # a control character escaped, not written raw


def test_tokenize_prints_cyrillic_as_cyrillic(capsys):
    from kvant.runtime.cli import _printable
    assert _printable("Привет".encode()) == "Привет"
    assert _printable(b"\n") == "\\n" and _printable(b"\xd0") == "\\xd0"


def test_context_that_cannot_fit_in_memory_is_one_line(capsys, tiny):
    code, out, err = run(capsys, "generate", tiny, "-p", "the", "-n", "1", "-c", "100000000000")
    assert code == 1 and err.count("\n") == 1
    assert "GiB of KV cache" in err and "GiB available" in err and "Unable to allocate" not in err


def test_threads_above_the_cpu_count_are_clamped_with_a_note(capsys, tiny):
    import numba
    code, out, err = run(capsys, "generate", tiny, "-p", "the", "-n", "2", "--temp", "0", "-t", "100000")
    assert code == 0, err
    assert f"using {numba.config.NUMBA_NUM_THREADS}" in err and "100000 threads" in err


@pytest.mark.parametrize("bad", [-1, 1.5, "8", True])
def test_api_max_tokens_checked_as_the_cli_checks_n(tiny, bad):
    from kvant.runtime import Model
    with Model(tiny) as m:
        with pytest.raises(ValueError, match="max_tokens must be an integer >= 0"):
            m.generate("the", max_tokens=bad)
        with pytest.raises(ValueError, match="max_tokens must be an integer >= 0"):
            m.chat([{"role": "user", "content": "hi"}], max_tokens=bad, stream=True)    # refused at the call
        assert m.generate("the", max_tokens=0) == ""


def test_stale_part_files_of_a_killed_run_are_removed_on_the_next_write(tmp_path):
    from kvant.convert.gguf_writer import temp_beside
    out = tmp_path / "model.gguf"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.gguf.{int(dead.stdout)}.abc123.part"     # a pid no process has now
    stale.write_bytes(b"half a file")
    live = tmp_path / f".model.gguf.{os.getpid()}.def456.part"             # a writer still running (this one)
    live.write_bytes(b"being written")
    other = tmp_path / ".other.gguf.1.x.part"
    other.write_bytes(b"")
    fd, name = temp_beside(str(out))
    os.close(fd)
    assert not stale.exists() and live.exists() and other.exists()
    assert os.path.basename(name).startswith(f".model.gguf.{os.getpid()}.") and name.endswith(".part")


def test_qconv_quantize_killed_leaves_nothing_after_the_next_run(tmp_path):
    """kill -9 in the middle of writing, then the same command again: one output file, no hidden .part."""
    src = write_tiny_model(tmp_path / "src.gguf", weight_type="F32")
    out = tmp_path / "q.gguf"
    cmd = [sys.executable, "-m", "kvant.convert.cli", "quantize", str(src), str(out), "Q8_0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".q.gguf.*.part")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    if out.exists():
        pytest.skip("the quantize finished before it could be killed")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.exists() and not list(tmp_path.glob(".q.gguf.*"))


def test_second_first_fetch_waits_for_the_first(tmp_path, monkeypatch):
    """Two processes resolving a known model at once: the second waits on the lock and then finds the file."""
    from kvant.runtime import model_cache
    monkeypatch.setenv("KVANT_CACHE", str(tmp_path))
    target = model_cache.cached_path("smollm2")
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, sys, time, os
os.makedirs({str(target.parent)!r}, exist_ok=True)
lock = open({str(target.parent / ('.' + target.name + '.lock'))!r}, "a")
fcntl.flock(lock, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(1.5)
open({str(target)!r}, "wb").write(b"GGUF")       # the first fetch's result
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    fetched = []
    monkeypatch.setattr(model_cache, "fetch", lambda name, progress=True: fetched.append(name))
    t0 = time.monotonic()
    assert model_cache.resolve_model("smollm2") == str(target)
    assert time.monotonic() - t0 > 0.5 and fetched == []          # it waited, and did not download again
    holder.wait()


def test_unknown_cpu_path_is_one_line(tiny):
    r = subprocess.run([sys.executable, "-m", "kvant.runtime.cli", "generate", tiny, "-p", "the", "-n", "1"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "KVANT_CPU_PATH": "sse9"})
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "KVANT_CPU_PATH=sse9" in r.stderr, r.stderr


def test_every_compile_is_announced_with_its_name_and_time(capsys):
    from numba import njit

    from kvant.runtime import compile_notice
    compile_notice.announce()

    @njit       # no cache: always compiled here
    def kvant_probe_kernel(x):
        return x + 1

    assert kvant_probe_kernel(1) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "kvant_probe_kernel" in x)
    assert line.startswith("kvant: compiled ") and " in " in line and " s (" in line


def test_a_warm_start_compiles_nothing(tiny):
    env = {**os.environ}
    cmd = [sys.executable, "-m", "kvant.runtime.cli", "generate", tiny, "-p", "the", "-n", "3", "--temp", "0"]
    subprocess.run(cmd, capture_output=True, timeout=600, env=env)             # fills numba's cache if needed
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0 and "compiled" not in r.stderr, r.stderr


def test_ctrl_c_during_a_compile_is_held_until_it_has_ended():
    """SIGINT in the middle of a numba compile: the compile completes (the kernel is there), then KeyboardInterrupt,
    and the kernel works (an interrupt inside numba's compiler left "no compiled object yet" behind)."""
    import signal

    from numba import njit
    from numba.core import event

    from kvant.runtime import compile_notice
    compile_notice.announce()

    @njit       # no cache: always compiled here
    def kvant_interrupted_kernel(x):
        return x * 2 + 1

    class CtrlCMidCompile(event.Listener):           # registered after kvant's: Ctrl-C once the compile has begun
        def on_start(self, ev):
            if ev.data["dispatcher"] is kvant_interrupted_kernel:
                signal.raise_signal(signal.SIGINT)

        def on_end(self, ev):
            pass

    listener = CtrlCMidCompile()
    event.register("numba:compile", listener)
    try:
        with pytest.raises(KeyboardInterrupt):
            kvant_interrupted_kernel(3)
    finally:
        event.unregister("numba:compile", listener)
    assert kvant_interrupted_kernel.signatures          # compiled before the interrupt was let through
    assert kvant_interrupted_kernel(3) == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_first_run_compiles_the_prompt_path_in_a_helper_process(tiny):
    """With this model's prompt path not yet marked as cached, `qrun generate` starts the helper, waits for it before
    the prompt, and writes the same text as the API; the helper marks the cache, so the next run starts none."""
    from kvant.formats.gguf_file import open_gguf
    from kvant.runtime import Model
    from kvant.runtime.compile_ahead import _marker
    from kvant.runtime.config import Config
    gguf = open_gguf(tiny)
    marker = _marker(gguf, Config.from_metadata(gguf.metadata), "f16")
    if os.path.exists(marker):
        os.remove(marker)
    cmd = [sys.executable, "-m", "kvant.runtime.cli", "generate", tiny, "-p", "the the", "-n", "6", "--temp", "0"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0 and "compiling the prompt path in a helper process" in first.stderr, first.stderr
    assert os.path.exists(marker)
    assert first.stdout == Model(tiny).generate("the the", max_tokens=6, temperature=0)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "helper" not in second.stderr and second.stdout == first.stdout


def test_the_helper_needs_numba_s_cache(tiny, tmp_path, monkeypatch):
    from kvant.formats.gguf_file import open_gguf
    from kvant.runtime import compile_ahead
    from kvant.runtime.config import Config
    gguf = open_gguf(tiny)
    cfg = Config.from_metadata(gguf.metadata)
    # the key: which kernels a prompt compiles depends on the KV type
    assert compile_ahead._marker(gguf, cfg, "f16") != compile_ahead._marker(gguf, cfg, "f32")
    monkeypatch.setattr(compile_ahead, "_marker", lambda *args: str(tmp_path / "not-yet"))
    monkeypatch.setenv("NUMBA_DISABLE_CACHE", "1")
    assert compile_ahead.PromptPathHelper.start(tiny, gguf, cfg, "f16", 0) is None


def test_numba_s_cache_is_per_version_source_and_path(tmp_path):
    """A kernel that inlines a helper of another module is cached with its own file's stamp only: after an update
    of the helper's file alone numba would load the old code. The folder changes with any source file instead."""
    import shutil

    from kvant.formats import host
    assert os.path.basename(host.CACHE_DIR) == f"kvant-{host._version()}-{host.source_digest()}-{host.CPU_PATH}"
    installed = os.path.dirname(os.path.dirname(os.path.abspath(host.__file__)))
    for package in host.SOURCE_PACKAGES:
        shutil.copytree(os.path.join(installed, package), tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    before = host.source_digest(str(tmp_path))
    assert before == host.source_digest()
    helper = tmp_path / "runtime" / "kernels" / "_common.py"
    helper.write_text(helper.read_text() + "\n# an edit\n")
    assert host.source_digest(str(tmp_path)) != before


def test_numba_cache_saves_hold_a_lock_shared_by_processes(tmp_path):
    """The compile-ahead helper and its parent save into the same cache folder at once: each numba save (read the
    index, pick a data file name, write) runs under one lock file of the folder, so two saves cannot interleave."""
    module = tmp_path / "kvant_lock_probe.py"
    module.write_text("from numba import njit\n\n\n@njit(cache=True)\ndef twice(x):\n    return 2 * x\n")
    code = ("import kvant.formats, kvant_lock_probe as m; assert m.twice(2) == 4 and m.twice(2.5) == 5.0")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)
    walk = list(os.walk(tmp_path / "cache"))
    index_dirs = {d for d, _, files in walk if any(f.endswith(".nbi") for f in files)}
    lock_dirs = {d for d, _, files in walk if ".kvant-save.lock" in files}
    assert index_dirs and index_dirs <= lock_dirs      # every folder numba saved into was saved under the lock
