"""Constrained decoding: a JSON schema, "any JSON object" or a grammar (GBNF or Lark) enforced while sampling, by
the token mask of llguidance (the Rust library behind Guidance, also used by llama.cpp's and vLLM's structured
output).

Why llguidance and not xgrammar: both compile JSON schemas and context-free grammars to per-token masks, but
xgrammar's package requires torch, triton and transformers (gigabytes, for a CPU runtime that has none of them),
while llguidance is one small wheel with numpy helpers; it reads llama.cpp's GBNF, Lark and JSON Schema, with a
documented list of the schema features it supports (an unsupported one is an error that names it).

Each step the mask is computed for the tokens allowed next (llguidance writes a bitmask), the logits of the others
set to -inf before the sampler sees them, and the sampled token is fed back. When the grammar is complete only the
end-of-generation tokens remain allowed, so generation ends there.
"""
from __future__ import annotations

import json
from functools import lru_cache

import numpy as np

try:
    import llguidance
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask
except ImportError:          # pragma: no cover - a dependency of the package; reported when a constraint is asked for
    llguidance = None


class ConstraintError(ValueError):
    """A schema or grammar that cannot be compiled (invalid, or a feature llguidance does not support); the
    message is one line."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


class _TokenizerView:
    """What llguidance.TokenizerWrapper reads from a tokenizer: every token's bytes, the special ones marked, BOS,
    EOS, and encode(bytes) -> ids."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        n = tokenizer.n_vocab
        self.tokens = [tokenizer.token_bytes(i, special=True) for i in range(n)]
        self.special_token_ids = [i for i in range(n)
                                  if self.tokens[i] and not tokenizer.token_bytes(i, special=False)]
        self.eos_token_id = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.eot_ids[0]
        self.bos_token_id = tokenizer.bos_id

    def __call__(self, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "surrogateescape")
        return self._tok.encode(text, add_special=False, parse_special=False)


@lru_cache(maxsize=4)
def _ll_tokenizer(tokenizer, stop_ids: tuple):
    if llguidance is None:
        raise ConstraintError("constrained decoding needs the llguidance package (pip install llguidance)")
    view = llguidance.TokenizerWrapper(_TokenizerView(tokenizer))
    return llguidance.LLTokenizer(view, n_vocab=tokenizer.n_vocab, eos_token=list(stop_ids))


def grammar_for(json_schema=None, grammar: str | None = None) -> str:
    """llguidance's grammar for a JSON schema (a dict or its JSON text; {"type": "object"} is any object) or for a
    GBNF / Lark grammar text."""
    if (json_schema is None) == (grammar is None):
        raise ConstraintError("give a JSON schema or a grammar, not both")
    if llguidance is None:
        raise ConstraintError("constrained decoding needs the llguidance package (pip install llguidance)")
    try:
        if json_schema is not None:
            text = json_schema if isinstance(json_schema, str) else json.dumps(json_schema)
            return llguidance.LLMatcher.grammar_from_json_schema(text)
        return llguidance.grammar_from("grammar", grammar)
    except (ValueError, TypeError) as e:
        raise ConstraintError(f"invalid {'JSON schema' if json_schema is not None else 'grammar'}: {e}") from None


class Constraint:
    """One generation's state: mask(logits) before each sample, accept(token) after it."""

    def __init__(self, tokenizer, stop_ids, grammar: str):
        lltok = _ll_tokenizer(tokenizer, tuple(sorted(stop_ids)))
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, lltok)
        if is_error:
            raise ConstraintError(f"the schema or grammar cannot be used: {messages[0]}")
        self.matcher = llguidance.LLMatcher(lltok, grammar)
        if self.matcher.is_error():
            raise ConstraintError(f"the schema or grammar cannot be used: {self.matcher.get_error()}")
        self.n_vocab = tokenizer.n_vocab
        self._bits = allocate_token_bitmask(1, self.n_vocab)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A copy of logits with every token the grammar does not allow next at -inf."""
        fill_next_token_bitmask(self.matcher, self._bits)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[:self.n_vocab].astype(bool)
        out = np.full(logits.shape, -np.inf, np.float32)
        n = min(len(logits), self.n_vocab)
        out[:n][allowed[:n]] = logits[:n][allowed[:n]]
        return out

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(int(token)):
            raise ConstraintError(f"the grammar refused token {token}: {self.matcher.get_error()}")

    @property
    def done(self) -> bool:
        return self.matcher.is_stopped()
