"""Log-probabilities of sampled tokens, as OpenAI's API reports them: the log-softmax of the model's own logits
(before any sampling setting), for the chosen token and the k most likely ones."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_TOP = 20        # OpenAI's limit for top_logprobs


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float
    top: tuple            # ((token id, logprob), ...), most likely first, k of them


def token_logprob(logits: np.ndarray, token: int, k: int) -> TokenLogprob:
    """The chosen token's log-probability under logits (float64 log-sum-exp) and the k most likely tokens'."""
    z = np.asarray(logits, np.float64)
    top = z.max()
    lse = top + np.log(np.exp(z - top).sum())
    best = ()
    if k > 0:
        idx = np.argpartition(-z, min(k, z.size) - 1)[:k]
        idx = idx[np.argsort(-z[idx], kind="stable")]
        best = tuple((int(i), float(z[i] - lse)) for i in idx)
    return TokenLogprob(int(token), float(z[token] - lse), best)


def check_top(k, what="logprobs") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= MAX_TOP:
        raise ValueError(f"{what} must be an integer from 0 to {MAX_TOP}, got {k!r}")
    return int(k)
