"""A progress bar on stderr for work of several seconds counted in steps (perplexity chunks, bench runs). tqdm draws
it only on a terminal (disable=None) and wipes it when the work ends (leave=False), so logs and pipes stay clean."""
import sys
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def step_progress(total: int | None, desc: str, unit: str = "step"):
    """Yields advance(total=None, **postfix): one step done, with values to show beside the bar (e.g. ppl=12.3);
    a total not known at the start (the chunks of a text not yet tokenized) is given by the first advance."""
    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True)
    try:
        def advance(total=None, **postfix):
            if total is not None:
                bar.total = total
            if postfix:
                bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            bar.refresh()       # steps are seconds apart: draw each, whatever tqdm's rate limit
        yield advance
    finally:
        bar.close()
