"""How many threads the kernels use: the physical cores by default, -t to change."""
import os
import sys

import numba


def physical_cores() -> int:
    """Cores this process may run on, counting hyper-thread siblings once."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def configure(n_threads: int | None = None) -> int:
    """Set numba's thread count; returns it. More threads than numba started with (the CPUs this process may use)
    are not possible: a larger count is clamped, with a one-line note on stderr."""
    limit = numba.config.NUMBA_NUM_THREADS
    n = physical_cores() if n_threads is None else int(n_threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    if n > limit:
        print(f"kvant: {n} threads asked for, this machine runs {limit} at once: using {limit}", file=sys.stderr,
              flush=True)
    n = min(n, limit)
    numba.set_num_threads(n)
    return n
