"""Sampling: small pure functions over logits, composed in llama.cpp's order
(repeat penalty -> top-k -> top-p -> min-p -> temperature -> draw). Temperature 0 is argmax."""
from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass(frozen=True)
class SamplerSettings:
    """llama.cpp's defaults."""
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None

    def __post_init__(self):
        checks = (
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0 (0 = off)"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (self.repeat_penalty > 0, "repeat_penalty must be > 0"),
            (self.repeat_last_n >= 0, "repeat_last_n must be >= 0"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.seed is not None and self.seed < 0:
            object.__setattr__(self, "seed", None)      # llama.cpp's seed -1: a random one


class NonFiniteLogitsError(ArithmeticError):
    """The model computed NaN or infinite logits: its weights hold such values (a corrupt or broken file)."""


def _raise_non_finite():
    raise NonFiniteLogitsError("the model's logits are NaN or infinite (NaN or infinite weights in the file?)")


def _check_finite(candidates):
    """candidates: logits sorted best first (NaN sorts last, or first for argmax)."""
    if np.isinf(candidates[0]) or np.isnan(candidates).any():
        _raise_non_finite()


def penalize_repeats(logits, recent, penalty):
    """llama.cpp's repeat penalty: positive logits of recent tokens divided by it, negative ones multiplied."""
    if penalty == 1.0 or len(recent) == 0:
        return logits
    logits = logits.copy()
    ids = np.unique(np.asarray(recent, np.int64))
    values = logits[ids]
    logits[ids] = np.where(values > 0, values / penalty, values * penalty)
    return logits


SCAN_BLOCK = 64       # logits checked against the current cut at once


@njit(cache=True)
def _insert(ids, values, filled, j, v):
    """Insert logit v of token j, above the last entry when the buffer is full, into the sorted buffer
    (descending; equals keep the earlier id first), the last entry falling off when it is full. Returns the new
    fill."""
    k = ids.shape[0]
    if filled == k:
        slot = k - 1
    else:
        slot = filled
        filled += 1
    while slot > 0 and values[slot - 1] < v:
        values[slot] = values[slot - 1]
        ids[slot] = ids[slot - 1]
        slot -= 1
    values[slot] = v
    ids[slot] = j
    return filled


@njit(cache=True)
def _walk(logits, start, end, ids, values, filled, n_nan):
    """Offer logits[start:end] to the buffer one by one. Returns (fill, NaN count)."""
    k = ids.shape[0]
    for j in range(start, end):
        v = np.float64(logits[j])
        if v != v:
            n_nan += 1
        elif filled < k or v > values[k - 1]:
            filled = _insert(ids, values, filled, j, v)
    return filled, n_nan


@njit(cache=True)
def _largest(logits, ids, values):
    """The len(ids) largest logits into values (descending) and their ids, the lower id first among equals, in one
    pass with a sorted buffer. Once the buffer is full, a block of logits is first counted against its last entry
    in a fixed-length loop LLVM vectorizes (with a variable end it did not: 5x slower), and only blocks holding a
    candidate or a NaN are walked: 0.05 ms on a 262,144-token vocabulary, where walking every logit took 0.24 and
    argpartition and argsort of a copy 8. Returns the number of NaN logits (skipped)."""
    k = ids.shape[0]
    n = logits.shape[0]
    filled, n_nan = 0, 0
    full_blocks = n // SCAN_BLOCK
    for b in range(full_blocks):
        start = b * SCAN_BLOCK
        if filled == k:
            block = logits[start:start + SCAN_BLOCK]
            cut = values[k - 1]
            above = 0
            for j in range(SCAN_BLOCK):
                v = np.float64(block[j])
                above += (v > cut) | (v != v)
            if above == 0:
                continue
        filled, n_nan = _walk(logits, start, start + SCAN_BLOCK, ids, values, filled, n_nan)
    filled, n_nan = _walk(logits, full_blocks * SCAN_BLOCK, n, ids, values, filled, n_nan)
    return n_nan


def top_k(logits, k):
    """The k largest logits (all of them when k is 0 or not below their number) as (ids, float64 values), sorted
    by logit, descending; NaN logits are a NonFiniteLogitsError."""
    if 0 < k < len(logits):
        ids = np.empty(k, np.int64)
        values = np.empty(k, np.float64)
        if _largest(logits, ids, values):
            _raise_non_finite()
        return ids, values
    values = logits.astype(np.float64)
    ids = np.argsort(-values, kind="stable")
    return ids, values[ids]


def softmax(logits):
    e = np.exp(logits - logits.max())
    return e / e.sum()


def top_p(ids, logits, p):
    """Smallest prefix of the (sorted) candidates whose probability reaches p."""
    if p >= 1.0:
        return ids, logits
    cumulative = np.cumsum(softmax(logits))
    n = int(np.searchsorted(cumulative, p) + 1)
    return ids[:n], logits[:n]


def min_p(ids, logits, p):
    """Drop candidates less likely than p times the most likely one."""
    if p <= 0.0:
        return ids, logits
    keep = logits >= logits.max() + np.log(p)
    return ids[keep], logits[keep]


class Sampler:
    """Picks the next token from logits; randomness is one seeded generator."""

    def __init__(self, settings: SamplerSettings = SamplerSettings()):
        self.settings = settings
        self.rng = np.random.default_rng(settings.seed)

    def __call__(self, logits, history=()):
        s = self.settings
        recent = history[-s.repeat_last_n:] if s.repeat_last_n else []
        logits = penalize_repeats(logits, recent, s.repeat_penalty)
        if s.temperature == 0:
            best = int(np.argmax(logits))         # the first NaN, if there is one
            _check_finite(logits[best:best + 1])
            return best
        ids, values = top_k(logits, s.top_k)
        _check_finite(values)
        ids, values = top_p(ids, values, s.top_p)
        ids, values = min_p(ids, values, s.min_p)
        probs = softmax(values / s.temperature)
        return int(ids[self.rng.choice(len(ids), p=probs)])
