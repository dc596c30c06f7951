"""How many threads the kernels use: the physical cores by default, -t to change."""
import os

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
    """Set numba's thread count; returns it. More threads than numba started with are not possible."""
    limit = numba.config.NUMBA_NUM_THREADS
    n = physical_cores() if n_threads is None else int(n_threads)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    n = min(n, limit)
    numba.set_num_threads(n)
    return n
