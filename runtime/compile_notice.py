"""Say when numba compiles: every compile (a cache miss; loading from numba's cache is silent) is one line on stderr
with the kernel it compiles and how long it took, so a first run or a newly used weight type never sits silent.

Compiles nested inside another (a kernel's callees) count towards the outer one.

Ctrl-C during a compile is held until the compile has ended: a KeyboardInterrupt raised inside numba's compiler (in
one of llvmlite's callbacks) leaves a half-made library behind, and every later call of that kernel fails with "no
compiled object yet" (seen: Ctrl-C in `qrun chat` while its first answer compiled the sampler). Held, it arrives
right after, where the chat stops the answer as it does for any Ctrl-C.
"""
import signal
import sys
import threading
import time

from numba.core import event

_state = threading.local()


class _Announcer(event.Listener):
    def __init__(self):
        self.count = 0
        self.seconds = 0.0

    def on_start(self, ev):
        depth = getattr(_state, "depth", 0)
        _state.depth = depth + 1
        if depth == 0:
            _state.t0 = time.perf_counter()
            _state.held = None
            if _holds_ctrl_c():
                _state.interrupted = False
                _state.held = signal.signal(signal.SIGINT, _hold)

    def on_end(self, ev):
        _state.depth -= 1
        if _state.depth:
            return
        if _state.held is not None:
            signal.signal(signal.SIGINT, _state.held)
            if _state.interrupted:      # numba has added the compiled kernel: safe to stop now
                raise KeyboardInterrupt
        took = time.perf_counter() - _state.t0
        self.count += 1
        self.seconds += took
        dispatcher = ev.data["dispatcher"]
        name = f"{dispatcher.py_func.__module__.removeprefix('kvant.')}.{dispatcher.py_func.__name__}"
        say(f"kvant: compiled {name} in {took:.1f} s ({self.count} so far, {self.seconds:.0f} s; later runs load "
            f"them from the cache)")


def _holds_ctrl_c():
    """Whether Ctrl-C can be held here: only the main thread sets signal handlers, and a handler set outside Python
    (None) could not be put back; where SIGINT is ignored there is nothing to hold."""
    return (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) not in (None, signal.SIG_IGN))


def _hold(signum, frame):
    _state.interrupted = True


_listener = None


def say(line):
    """One line about compiling, where compiles are announced: whole lines (a compile may come in the middle of an
    answer), to whatever sys.stderr is by then."""
    if _listener is not None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def announce():
    """Start announcing compiles (idempotent)."""
    global _listener
    if _listener is None:
        _listener = _Announcer()
        event.register("numba:compile", _listener)

