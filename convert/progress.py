"""A progress bar on stderr, one step per tensor, showing the tensor's name and the throughput in MB/s."""
from __future__ import annotations

import sys
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def tensor_progress(total_bytes: int, enabled: bool = True):
    """Yields update(name, nbytes). The bar shows only on a terminal (tqdm's disable=None) unless disabled."""
    bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1000, file=sys.stderr,
               disable=None if enabled else True, dynamic_ncols=True, leave=True,
               bar_format="{desc:<32.32} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
                          "{rate_fmt}]")
    try:
        def update(name: str, nbytes: int) -> None:
            bar.set_description_str(name, refresh=False)
            bar.update(nbytes)
        yield update
    finally:
        bar.close()
