"""kvant.runtime's public API: load a GGUF model and tokenize, generate, chat and measure perplexity.

    from kvant.runtime import Model
    model = Model("smollm2")                      # a path, or the name of a known small model (fetched once)
    print(model.generate("The capital of France is", max_tokens=16, temperature=0))
    for piece in model.chat([{"role": "user", "content": "Hi!"}], stream=True):
        print(piece, end="", flush=True)
    print(model.perplexity(open("wiki.txt").read(), n_ctx=512).ppl)
"""
import math
import time
from dataclasses import dataclass, field

import numpy as np

from kvant.formats.gguf_file import open_gguf
from kvant.runtime import kld, threads
from kvant.runtime import embeddings
from kvant.runtime.chat_families import fallback_template
from kvant.runtime.chat_template import ChatTemplate
from kvant.runtime.constrained import Constraint, grammar_for
from kvant.runtime.logprobs import check_top, token_logprob
from kvant.runtime.compile_ahead import PromptPathHelper
from kvant.runtime.config import Config
from kvant.runtime.model import ContextFullError, KVCache, Transformer, check_weights
from kvant.runtime.model_cache import resolve_model
from kvant.runtime.sampling import Sampler, SamplerSettings
from kvant.runtime.textstream import TextStream
from kvant.runtime.tokenizer import Tokenizer

DEFAULT_N_CTX = 4096
MIN_PERPLEXITY_CTX = 4       # half a chunk is context, the rest is scored: fewer tokens leave nothing to score


@dataclass
class Stats:
    """What the last generate/chat call did: tokens reused from the cache, prefilled and generated, and timings."""
    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefilled_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    context_full: bool = False     # generation stopped because the context had no room for another token


@dataclass
class PerplexityResult:
    ppl: float
    nll: float
    n_chunks: int
    n_ctx: int
    n_tokens_scored: int
    chunk_ppl: list = field(default_factory=list)


class Model:
    """A GGUF model ready to run on the CPU. The KV cache keeps the tokens of the last call, so a following call
    whose prompt extends them (the next turn of a chat) only computes its new tokens."""

    def __init__(self, model: str, n_ctx: int | None = None, n_threads: int | None = None, n_batch: int = 512,
                 kv_type: str = "f16", before_weights=None, compile_ahead: bool = False,
                 chat_template: str | None = None):
        """model: a GGUF path or a known model name. kv_type: "f16" (llama.cpp's default) or "f32".
        chat_template: a Jinja chat template (its text) to use instead of the file's; a file with none gets its
        family's (chat_families.py), and template_note says so in one line.
        before_weights: called once the file has passed every check, before weights are prepared and kernels
        compiled (the CLI announces a first-run compile there). compile_ahead: on a first run, compile the prompt
        path in a helper process while this one compiles the decode step (compile_ahead.py)."""
        t0 = time.perf_counter()
        KVCache.check_type(kv_type)
        if n_ctx is not None and int(n_ctx) <= 0 or int(n_batch) <= 0:
            raise ValueError(f"n_ctx and n_batch must be positive (n_ctx={n_ctx}, n_batch={n_batch})")
        self.path = resolve_model(model)
        threads.configure(n_threads)
        self.file = open_gguf(self.path)
        md = self.file.metadata
        self.config = Config.from_metadata(md)
        self.tokenizer = Tokenizer.from_metadata(md)
        self.template, self.template_note = self._chat_template(chat_template)    # a bad one fails before the weights
        # a file may carry a second template for conversations with tools (llama.cpp and transformers pick it then)
        tool_use = md.get("tokenizer.chat_template.tool_use") if chat_template is None else None
        self.tool_template = self._chat_template(tool_use)[0] if isinstance(tool_use, str) and tool_use else None
        check_weights(self.file, self.config)
        if before_weights is not None:
            before_weights()
        self.transformer = Transformer(self.file, self.config)
        self.n_ctx = int(n_ctx or min(DEFAULT_N_CTX, self.config.n_ctx_train))
        self.n_batch = int(n_batch)
        self.kv_type = kv_type
        self.cache = KVCache(self.config, self.n_ctx, kv_type)
        self._helper = PromptPathHelper.start(self.path, self.file, self.config, kv_type,
                                              self.transformer.weight_bytes) if compile_ahead else None
        try:
            # the decode steps' machine code, loaded from numba's cache (40-80 ms) while the model opens, as
            # llama.cpp has its code ready at load: a first generate call runs at the speed of every later one
            self.transformer.prepare_decode(self.cache)
            if self._helper is not None:      # a first run: the rest of a token's path is compiled here meanwhile
                self._compile_token_path()
        except BaseException:                 # Ctrl-C or a failure while loading: no helper outlives the load
            if self._helper is not None:
                self._helper.stop()
            raise
        self.stop_ids = frozenset(self.tokenizer.eot_ids) | ({self.tokenizer.eos_id} - {None})
        self._tokens: list[int] = []          # tokens whose keys and values are in the cache, in order
        self.stats = Stats()
        self.logprobs: list = []              # TokenLogprob of each token the last call generated (logprobs=k)
        self.load_seconds = time.perf_counter() - t0

    @property
    def metadata(self):
        return self.file.metadata

    def _chat_template(self, source):
        """(ChatTemplate, None or the line saying which family's template a file without one got)."""
        md, note = self.file.metadata, None
        source = source or md.get("tokenizer.chat_template")
        if not isinstance(source, str) or not source:
            source, note = fallback_template(md.get("tokenizer.ggml.tokens"))
        specials = {f"{name}_token": self._token_text(md.get(f"tokenizer.ggml.{key}_token_id"))
                    for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))}
        return ChatTemplate(source, special_tokens=specials), note

    def template_for(self, tools) -> ChatTemplate:
        """The chat template a conversation renders with: the file's tool_use one where it has one and tools are
        offered, else the chat template."""
        return self.tool_template if tools and self.tool_template is not None else self.template

    def _token_text(self, token_id):
        n_tokens = len(self.file.metadata.get("tokenizer.ggml.tokens") or ())
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)) or not 0 <= token_id < n_tokens:
            return ""
        return self.tokenizer.token_bytes(int(token_id)).decode("utf-8", "replace")

    # -- tokens ----------------------------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Token ids of text. add_bos: None follows the file (tokenizer.ggml.add_bos_token)."""
        ids = self.tokenizer.encode(text, add_special=False, parse_special=special)
        if add_bos if add_bos is not None else self.tokenizer.add_bos:
            ids = [self.tokenizer.bos_id] + ids
        return ids

    def detokenize(self, ids, special: bool = False) -> str:
        """Text of token ids; special=True also renders control tokens (BOS, <|im_start|>, ...) as their text,
        as llama-cpp-python's detokenize(special=True)."""
        return self.tokenizer.decode(list(ids), special=special)

    # -- evaluation --------------------------------------------------------------------------------------------
    def reset(self):
        """Forget the cached tokens."""
        self._tokens = []

    def eval(self, tokens) -> np.ndarray:
        """Bring the cache to exactly `tokens` and return the logits after the last one (float32, n_vocab).
        The longest prefix already in the cache is reused."""
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("nothing to evaluate: the prompt is empty")
        self.tokenizer.check_ids(tokens)      # the embedding has as many rows (check_weights)
        if len(tokens) > self.n_ctx:
            raise ContextFullError(f"context full: the prompt has {len(tokens)} tokens, n_ctx is {self.n_ctx}")
        self._await_helper()
        keep = _common_prefix(self._tokens, tokens)
        keep = min(keep, len(tokens) - 1)     # the last token is always run: its logits are needed
        self._tokens = self._tokens[:keep]
        t0 = time.perf_counter()
        logits = None
        for start in range(keep, len(tokens), self.n_batch):
            batch = tokens[start:start + self.n_batch]
            logits = self.transformer.forward(batch, start, self.cache)
            self._tokens.extend(batch)
        self.stats = Stats(prompt_tokens=len(tokens), reused_tokens=keep, prefilled_tokens=len(tokens) - keep,
                           prefill_seconds=time.perf_counter() - t0)
        return logits[-1]

    def _compile_token_path(self):
        """Compile what a generated token needs besides the decode step (its embedding row, the output head,
        sampling greedy and not) by running one token at position 0; the cache holds no tokens yet, so nothing
        that is kept is overwritten."""
        logits = self.transformer.forward([max(self.tokenizer.bos_id or 0, 0)], 0, self.cache)[-1]
        for settings in (SamplerSettings(), SamplerSettings(temperature=0)):
            Sampler(settings)(logits.copy())

    def _await_helper(self):
        """Before the first prompt: the prompt path's kernels are in numba's cache once the helper has ended."""
        if self._helper is not None:
            self._helper.wait()
            self._helper = None

    def _step(self, token):
        if len(self._tokens) >= self.n_ctx:
            raise ContextFullError(f"context full: n_ctx={self.n_ctx} tokens are used (start a new chat or "
                                   f"raise -c)")
        logits = self.transformer.forward([token], len(self._tokens), self.cache)
        self._tokens.append(token)
        return logits[-1]

    # -- generation --------------------------------------------------------------------------------------------
    def generate_tokens(self, prompt_tokens, max_tokens=128, sampler: Sampler | None = None, ignore_eos=False,
                        logprobs: int | None = None, constraint: Constraint | None = None):
        """Yield token ids sampled after prompt_tokens until an end-of-generation token (unless ignore_eos, as
        llama.cpp's --ignore-eos), max_tokens, or the end of the context (stats.context_full: the last token yielded
        is the one that would not fit). logprobs=k: each token's TokenLogprob (its log-probability and the k most
        likely tokens') is appended to self.logprobs before the token is yielded. constraint: a schema or grammar
        (runtime/constrained.py) masking the logits before each sample; generation ends where it is complete."""
        stop_ids = frozenset() if ignore_eos else self.stop_ids
        self.logprobs = []
        k = None if logprobs is None else check_top(logprobs)
        sampler = sampler or Sampler()
        logits = self.eval(prompt_tokens)
        history = list(prompt_tokens)
        room = self.n_ctx - len(prompt_tokens) + 1
        limit = min(max_tokens, room)
        t0 = time.perf_counter()
        try:
            for i in range(limit):
                token = sampler(logits if constraint is None else constraint.mask(logits), history)
                if token in stop_ids:
                    break
                if constraint is not None:
                    constraint.accept(token)
                history.append(token)
                self.stats.generated_tokens += 1
                if k is not None:
                    self.logprobs.append(token_logprob(logits, token, k))
                yield token
                if constraint is not None and constraint.done:
                    break
                if i + 1 < limit:
                    logits = self._step(token)
            else:
                self.stats.context_full = limit < max_tokens
        finally:
            self.stats.decode_seconds = time.perf_counter() - t0

    def _stream_text(self, prompt_tokens, max_tokens, settings, stop, ignore_eos, logprobs=None, json_schema=None,
                     grammar=None):
        _check_max_tokens(max_tokens)       # here, not inside the generator: refused at the call, as the CLI refuses
        if logprobs is not None:
            check_top(logprobs)
        constraint = self.constraint(json_schema, grammar)
        return self._pieces(prompt_tokens, max_tokens, settings, stop, ignore_eos, logprobs, constraint)

    def constraint(self, json_schema=None, grammar=None) -> Constraint | None:
        """The Constraint of a JSON schema (a dict, its JSON text, or {"type": "object"} for any object) or of a
        GBNF / Lark grammar; None for neither. A ConstraintError (a ValueError) names what cannot be compiled."""
        if json_schema is None and grammar is None:
            return None
        return Constraint(self.tokenizer, self.stop_ids, grammar_for(json_schema, grammar))

    def _pieces(self, prompt_tokens, max_tokens, settings, stop, ignore_eos, logprobs, constraint):
        stream = TextStream(stop)
        for token in self.generate_tokens(prompt_tokens, max_tokens, Sampler(settings), ignore_eos, logprobs,
                                          constraint):
            piece = stream.feed(self.tokenizer.token_bytes(token, special=False))
            if piece:
                yield piece
            if stream.stopped:
                return
        tail = stream.flush()
        if tail:
            yield tail

    def generate(self, prompt: str, max_tokens: int = 128, *, temperature: float = 0.8, top_k: int = 40,
                 top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0, seed: int | None = None,
                 stop=(), stream: bool = False, add_bos: bool | None = None, ignore_eos: bool = False,
                 logprobs: int | None = None, json_schema=None, grammar: str | None = None):
        """Continue prompt. stream=True returns an iterator of text pieces; otherwise the whole text.
        logprobs=k (0-20): afterwards self.logprobs holds a TokenLogprob per generated token (runtime/logprobs.py).
        json_schema (a dict or JSON text) or grammar (GBNF or Lark): the text always parses by it
        (runtime/constrained.py), unless max_tokens cuts it short."""
        settings = SamplerSettings(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                   repeat_penalty=repeat_penalty, seed=seed)
        pieces = self._stream_text(self.tokenize(prompt, add_bos=add_bos, special=True), max_tokens, settings, stop,
                                   ignore_eos, logprobs, json_schema, grammar)
        return pieces if stream else "".join(pieces)

    def chat(self, messages, max_tokens: int = 512, *, stream: bool = False, stop=(), ignore_eos: bool = False,
             logprobs: int | None = None, json_schema=None, grammar: str | None = None, **sampling):
        """Answer the last message of a conversation [{"role": ..., "content": ...}, ...] using the file's chat
        template. Earlier turns still in the cache are not computed again. logprobs, json_schema, grammar: as in
        generate."""
        check_messages(messages)
        text = self.template.render(messages, add_generation_prompt=True)
        # the template writes BOS itself where the model wants one
        tokens = self.tokenizer.encode(text, add_special=False, parse_special=True)
        settings = SamplerSettings(**sampling)
        pieces = self._stream_text(tokens, max_tokens, settings, stop, ignore_eos, logprobs, json_schema, grammar)
        return pieces if stream else "".join(pieces)

    # -- embeddings ----------------------------------------------------------------------------------------------
    def embed(self, texts, pooling: str | None = None, normalize: bool = True):
        """Embeddings of a text or a list of texts (or of token id lists), as llama.cpp makes them: each input from
        an empty cache, the final norm's output pooled (pooling: "mean", "cls", "last" or "none"; default: the
        file's {arch}.pooling_type, else mean) and L2-normalised. Returns float32 (n, d_model) for a list, (d_model,)
        for one text ("none": per-token arrays). The cache is left empty."""
        pooling = embeddings.check_pooling(pooling or embeddings.file_pooling(self.metadata))
        single = isinstance(texts, str) or (isinstance(texts, (list, tuple)) and texts and
                                            all(isinstance(t, (int, np.integer)) for t in texts))
        inputs = [texts] if single else list(texts)
        if not inputs:
            raise embeddings.EmbeddingError("no input to embed")
        out, self.stats = [], Stats()
        self._await_helper()
        self.reset()
        for item in inputs:
            tokens = self._embedding_tokens(item)
            out.append(embeddings.pool(self.final_hidden(tokens), pooling, normalize))
            self.stats.prompt_tokens += len(tokens)
        self.reset()
        if single:
            return out[0]
        return out if pooling == "none" else np.stack(out)

    def final_hidden(self, tokens) -> np.ndarray:
        """The final norm's output for every token (float32, (len(tokens), d_model)), run from position 0 in batches
        of n_batch: what llama.cpp pools into an embedding. The cache then holds these tokens' keys and values only
        until the next call (self._tokens is not set: no prompt reuses them)."""
        self._tokens = []
        return np.concatenate([self.transformer.forward(tokens[s:s + self.n_batch], s, self.cache, hidden=True)
                               for s in range(0, len(tokens), self.n_batch)])

    def _embedding_tokens(self, item):
        if isinstance(item, str):
            tokens = self.tokenize(item, add_bos=None)
            if self.tokenizer.add_eos and self.tokenizer.eos_id is not None:
                tokens.append(self.tokenizer.eos_id)
        elif isinstance(item, (list, tuple)) and all(isinstance(t, (int, np.integer)) for t in item):
            tokens = [int(t) for t in item]
            self.tokenizer.check_ids(tokens)
        else:
            raise embeddings.EmbeddingError("an input to embed is a string or a list of token ids")
        if not tokens:
            raise embeddings.EmbeddingError("an input to embed has no tokens")
        if len(tokens) > self.n_ctx:
            raise embeddings.EmbeddingError(f"an input of {len(tokens)} tokens does not fit in n_ctx={self.n_ctx}")
        return tokens

    # -- perplexity ----------------------------------------------------------------------------------------------
    def perplexity(self, text: str, n_ctx: int = 512, n_chunks: int | None = None, progress=None,
                   kl_base=None):
        """llama-perplexity's method: the text's tokens cut into chunks of n_ctx (BOS first where the vocab adds
        one), each run from an empty cache, the negative log-likelihood scored on the second half of each.
        kl_base: a writable binary file that gets the log-probabilities of every scored token in
        llama-perplexity's --kl-divergence-base format (runtime/kld.py), for `kl_divergence` of another model."""
        if n_ctx < MIN_PERPLEXITY_CTX:
            raise ValueError(f"perplexity needs chunks of at least {MIN_PERPLEXITY_CTX} tokens (n_ctx={n_ctx})")
        tokens = self.tokenize(text, add_bos=None)
        if len(tokens) < 2 * n_ctx:
            raise ValueError(f"perplexity needs at least {2 * n_ctx} tokens for n_ctx={n_ctx}; "
                             f"the text has {len(tokens)}")
        n_total = len(tokens) // n_ctx
        n_chunks = n_total if n_chunks is None or n_chunks <= 0 else min(n_chunks, n_total)
        if kl_base is not None:
            kld.write_header(kl_base, n_ctx, self.config.n_vocab, n_chunks, tokens[:n_chunks * n_ctx])
        nll, count, chunk_ppl = 0.0, 0, []
        for c, (targets, logits) in enumerate(self.scored_chunks(tokens, n_ctx, n_chunks)):
            if kl_base is not None:
                kld.write_log_probs(kl_base, logits)
            nll += _nll(logits, targets)
            count += len(targets)
            chunk_ppl.append(math.exp(nll / count))
            if progress:
                progress(c + 1, n_chunks, chunk_ppl[-1])
        return PerplexityResult(ppl=math.exp(nll / count), nll=nll / count, n_chunks=n_chunks, n_ctx=n_ctx,
                                n_tokens_scored=count, chunk_ppl=chunk_ppl)

    def kl_divergence(self, base, progress=None) -> "kld.KLDivergence":
        """llama-perplexity --kl-divergence: this model against the log-probabilities in `base` (a binary file
        written by perplexity(kl_base=...) or by llama-perplexity --kl-divergence-base), on the tokens it holds."""
        header = kld.read_header(base, self.config.n_vocab)
        stats = kld.KLDivergence()
        n_chunks = header.n_chunks
        for c, (targets, logits) in enumerate(self.scored_chunks(header.tokens, header.n_ctx, n_chunks)):
            stats.add(logits, targets, kld.read_log_probs(base, header, len(targets)))
            if progress:
                progress(c + 1, n_chunks, stats.ppl_q)
        return stats

    def scored_chunks(self, tokens, n_ctx, n_chunks, states=None, from_layer=0):
        """Per chunk of n_ctx tokens: (the scored targets, the logits that predict them): its second half, as
        llama-perplexity scores it (BOS in place of the first token where the vocab adds one).
        states: a list of one list per chunk: filled with each layer's input hidden states (from_layer 0), or read
        to start at from_layer (Transformer.forward); needs each chunk in one batch (n_batch >= n_ctx)."""
        self._await_helper()
        if states is not None and self.n_batch < n_ctx:
            raise ValueError(f"layer states need whole chunks in one batch (n_batch {self.n_batch} < n_ctx {n_ctx})")
        cache = KVCache(self.config, n_ctx, self.kv_type)
        first = n_ctx // 2
        for c in range(n_chunks):
            chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
            if self.tokenizer.add_bos:
                chunk[0] = self.tokenizer.bos_id
            if states is not None:
                if from_layer == 0:
                    states.append([])
                logits = self.transformer.forward(chunk, 0, cache, logits_from=first, states=states[c],
                                                  from_layer=from_layer)
                yield np.asarray(chunk[first + 1:], np.int64), logits[:n_ctx - 1 - first]
                continue
            rows = []
            for start in range(0, n_ctx, self.n_batch):
                batch = chunk[start:start + self.n_batch]
                end = start + len(batch)
                if end <= first:
                    self.transformer.forward(batch, start, cache)
                    continue
                rows.append(self.transformer.forward(batch, start, cache, logits_from=max(0, first - start)))
            yield np.asarray(chunk[first + 1:], np.int64), np.concatenate(rows)[:n_ctx - 1 - first]

    def close(self):
        if self._helper is not None:
            self._helper.stop()
            self._helper = None
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_messages(messages) -> None:
    """A conversation is a non-empty list of {"role": str, "content": str} (what every chat template reads)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} must be a dict with a str 'role' and a str 'content'")


def _check_max_tokens(max_tokens):
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 0:
        raise ValueError(f"max_tokens must be an integer >= 0, got {max_tokens!r}")


def _common_prefix(a, b):
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _nll(logits, targets):
    """Sum of -log softmax(logits)[target] per row, in float64."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
    return float(np.sum(logsum - x[np.arange(len(targets)), targets]))


def load_tokenizer(model: str) -> Tokenizer:
    """The tokenizer of a model file alone, without loading its weights."""
    with open_gguf(resolve_model(model)) as f:
        return Tokenizer.from_metadata(f.metadata)


def load(model: str, **kwargs) -> Model:
    """Model(model, **kwargs)."""
    return Model(model, **kwargs)


__all__ = ["Model", "load", "load_tokenizer", "Stats", "PerplexityResult", "ContextFullError"]
