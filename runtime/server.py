"""qrun serve: an OpenAI-compatible HTTP API over one Model, as llama-server and ollama offer it.

    GET  /health                 {"status": "ok"}
    GET  /v1/models              the one model
    POST /v1/completions         {"prompt": "...", "max_tokens": 16, "stream": false, ...}
    POST /v1/chat/completions    {"messages": [{"role": "user", "content": "..."}], ...}: the file's chat template
    POST /v1/embeddings          {"input": "..." or [...], "encoding_format": "float" or "base64"}

"stream": true answers with server-sent events, `data: {chunk}` per text piece and `data: [DONE]` at the end.
One thread owns the Model and runs the requests one at a time, whole, in arrival order; the KV cache then still
holds the previous request's tokens, so the next turn of a conversation computes only its new ones
(usage.prompt_tokens_details.cached_tokens tells how many were reused). A client that closes its connection has its
request cancelled at the next token, streaming or not. A client's mistake, and a field the server does not implement
yet, is a 400 with OpenAI's {"error": {"message", "type", "param", "code"}} body.
"""
import asyncio
import base64
import contextlib
import dataclasses
import itertools
import json
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numba
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from kvant.runtime import embeddings, tool_calls
from kvant.runtime.logprobs import check_top
from kvant.runtime.sampling import Sampler, SamplerSettings
from kvant.runtime.textstream import TextStream

GRACE_SECONDS = 5          # on shutdown, responses still being sent after this are cancelled


class ShuttingDown(RuntimeError):
    """A request that was still waiting for the model when the server was told to stop."""


class ClientGone(RuntimeError):
    """The client closed its connection before its answer was ready: nobody is left to answer."""


class RequestError(ValueError):
    """The client's mistake: answered with a 400 and OpenAI's error body."""

    def __init__(self, message, param=None, code=None):
        super().__init__(message)
        self.param = param
        self.code = code


# -- reading a request -------------------------------------------------------------------------------------------
KINDS = {  # how a field's kind is named in errors -> the Python types json.loads gives for it
    "a number": (int, float),
    "an integer": (int,),
    "a boolean": (bool,),
    "a string": (str,),
    "an object": (dict,),
}

# sampling fields a request may set -> their kind; names are SamplerSettings' (top_k, min_p and repeat_penalty are
# llama-server's extensions); a field left out keeps the server's default (qrun serve's --temp, --top-k, ...)
SAMPLING_FIELDS = {
    "temperature": "a number",
    "top_p": "a number",
    "top_k": "an integer",
    "min_p": "a number",
    "repeat_penalty": "a number",
    "seed": "an integer",
}


# fields of OpenAI's API (and llama-server's) that qrun serve does not implement yet -> the values that ask for
# nothing, which are accepted; any other value is a 400 naming the field rather than a 200 with something else
# than the client asked for. Fields that cannot change the answer (user, metadata, store, ...) are ignored.
def _absent(*neutral):
    return lambda value: value is None or any(value == v and type(value) is type(v) for v in neutral)


UNIMPLEMENTED = {
    "functions": _absent([]),
    "function_call": _absent("none"),
    "presence_penalty": _absent(0, 0.0),
    "frequency_penalty": _absent(0, 0.0),
    "logit_bias": _absent({}),
    "echo": _absent(False),
    "suffix": _absent(""),
    "best_of": _absent(1),
    "modalities": _absent(["text"]),
    "audio": _absent(),
    "prediction": _absent(),
    "typical_p": _absent(1, 1.0),
    "mirostat": _absent(0),
}


def _refuse_unimplemented(body):
    for name, asks_nothing in UNIMPLEMENTED.items():
        if name in body and not asks_nothing(body[name]):
            raise RequestError(f"'{name}' is not supported by qrun serve yet (got {json.dumps(body[name])[:60]})",
                               name, "unsupported_parameter")


def _get(body, name, kind, default=None):
    """body[name] checked against its kind; default when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    types = KINDS[kind]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise RequestError(f"'{name}' must be {kind}, got {json.dumps(value)[:60]}", name)
    return value


def _stop_strings(body):
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise RequestError("'stop' must be a string or a list of strings", "stop")


def _sampler(body, defaults: SamplerSettings) -> Sampler:
    changes = {name: value for name, kind in SAMPLING_FIELDS.items()
               if (value := _get(body, name, kind)) is not None}
    try:
        return Sampler(dataclasses.replace(defaults, **changes))
    except ValueError as e:
        raise RequestError(str(e)) from None


def completion_prompt(model, body) -> list[int]:
    """A completion's prompt as token ids: a string (tokenized as Model.generate does), or a list of ids."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]                # one prompt in a batch of one
    if isinstance(prompt, str):
        return _checked(lambda: model.tokenize(prompt, special=True), "prompt")
    if isinstance(prompt, list) and prompt and all(type(t) is int for t in prompt):
        _checked(lambda: model.tokenizer.check_ids(prompt), "prompt")
        return list(prompt)
    if prompt is None:
        raise RequestError("'prompt' is required", "prompt")
    raise RequestError("'prompt' must be a string or a list of token ids (one prompt: n=1)", "prompt")


def _tool_calls_for_template(calls, i):
    """An assistant message's tool_calls as chat templates read them: arguments as an object, not a JSON string."""
    if not isinstance(calls, list):
        raise RequestError(f"messages[{i}].tool_calls must be a list", "messages")
    out = []
    for call in calls:
        f = call.get("function") if isinstance(call, dict) else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str):
            raise RequestError(f"messages[{i}].tool_calls: each needs a function with a name", "messages")
        args = f.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                raise RequestError(f"messages[{i}].tool_calls: arguments of {f['name']!r} are not JSON",
                                   "messages") from None
        out.append({**call, "type": "function", "function": {**f, "arguments": args}})
    return out


def _message(m, i):
    """One chat message as the template wants it: role and content strings (text parts joined); an assistant's
    tool_calls and a tool result's tool_call_id and name kept."""
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise RequestError(f"messages[{i}] must be an object with a 'role' string and a 'content'", "messages")
    content = m.get("content")
    if content is None:
        content = ""                      # an assistant turn that only called tools
    elif isinstance(content, list):
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                   for p in content):
            raise RequestError(f"messages[{i}].content: only text parts are supported", "messages")
        content = "".join(p["text"] for p in content)
    elif not isinstance(content, str):
        raise RequestError(f"messages[{i}].content must be a string or a list of text parts", "messages")
    out = {"role": m["role"], "content": content}
    if m.get("tool_calls"):
        out["tool_calls"] = _tool_calls_for_template(m["tool_calls"], i)
    for key in ("tool_call_id", "name"):
        if isinstance(m.get(key), str):
            out[key] = m[key]
    return out


def tool_setup(model, body):
    """(mode, functions) of the request's tools and tool_choice (tool_calls.chosen); a 400 for bad ones."""
    try:
        funcs = tool_calls.functions(body["tools"]) if body.get("tools") is not None else []
        return tool_calls.chosen(body.get("tool_choice"), funcs)
    except tool_calls.ToolCallError as e:
        raise RequestError(str(e), "tool_choice" if "tool_choice" in str(e) else "tools") from None


def chat_prompt(model, body) -> list[int]:
    """A chat's prompt as token ids: the file's chat template, rendered and tokenized as Model.chat does."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects", "messages")
    messages = [_message(m, i) for i, m in enumerate(messages)]
    _, funcs = tool_setup(model, body)           # tool_choice "none" still shows them, as OpenAI's API does
    tools = [{"type": "function", "function": f} for f in funcs] or None
    try:
        text = model.template_for(tools).render(messages, add_generation_prompt=True, tools=tools)
    except ValueError as e:               # the template refused the conversation (raise_exception, ...)
        raise RequestError(str(e), "messages") from None
    # the template writes BOS itself where the model wants one
    return _checked(lambda: model.tokenizer.encode(text, add_special=False, parse_special=True), "messages")


def _checked(call, field):
    """call(), its refusal of the request's input (text that is not UTF-8, ids outside the vocabulary) a 400 naming
    the request's field."""
    try:
        return call()
    except ValueError as e:
        raise RequestError(str(e), field) from None


@dataclass(frozen=True)
class Endpoint:
    """What differs between /v1/completions and /v1/chat/completions."""
    id_prefix: str
    object: str
    chunk_object: str
    prompt: Callable              # (model, body) -> token ids
    prompt_field: str
    max_tokens_fields: tuple      # the first one present counts
    whole: Callable               # text -> the content part of a choice
    piece: Callable               # text -> the content part of a streamed chunk's choice
    opening: dict | None          # the content part of a first chunk, before any text
    closing: dict                 # the content part of the last chunk, the one with the finish_reason
    top_logprobs: Callable        # body -> k alternatives per token, or None for no logprobs
    logprobs: Callable            # (model, [TokenLogprob], text offset) -> the choice's "logprobs" object


def _chat_top_logprobs(body):
    """Chat: `logprobs` true asks for them, `top_logprobs` (0-20) for alternatives, as OpenAI's API."""
    wanted = _get(body, "logprobs", "a boolean", False)
    k = _get(body, "top_logprobs", "an integer", None)
    if k is not None and not wanted:
        raise RequestError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    return _top_count(k or 0, "top_logprobs") if wanted else None


def _completion_top_logprobs(body):
    """Completions: `logprobs` is the number of alternatives (0-5 in OpenAI's API; up to 20 here)."""
    k = _get(body, "logprobs", "an integer", None)
    return None if k is None else _top_count(k, "logprobs")


def _top_count(k, field):
    """k alternatives per token, checked as the API checks logprobs=k (logprobs.check_top); a 400 naming field."""
    try:
        return check_top(k, f"'{field}'")
    except ValueError as e:
        raise RequestError(str(e), field) from None


def _token_entry(model, token, logprob):
    raw = model.tokenizer.token_bytes(token, special=False)
    return {"token": raw.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(raw)}


def _chat_logprobs(model, records, offset):
    return {"content": [{**_token_entry(model, r.token, r.logprob),
                         "top_logprobs": [_token_entry(model, t, lp) for t, lp in r.top]} for r in records]}


def _completion_logprobs(model, records, offset):
    """OpenAI's legacy shape: tokens, token_logprobs, top_logprobs (text -> logprob), text_offset."""
    texts = [model.tokenizer.token_bytes(r.token, special=False).decode("utf-8", "replace") for r in records]
    offsets = list(itertools.accumulate([len(t) for t in texts[:-1]], initial=offset)) if texts else []
    return {"tokens": texts, "token_logprobs": [r.logprob for r in records],
            "top_logprobs": [{_token_entry(model, t, lp)["token"]: lp for t, lp in r.top} for r in records],
            "text_offset": offsets}


COMPLETIONS = Endpoint(
    "cmpl", "text_completion", "text_completion", completion_prompt, "prompt", ("max_tokens",),
    whole=lambda text: {"text": text}, piece=lambda text: {"text": text}, opening=None, closing={"text": ""},
    top_logprobs=_completion_top_logprobs, logprobs=_completion_logprobs)
CHAT = Endpoint(
    "chatcmpl", "chat.completion", "chat.completion.chunk", chat_prompt, "messages",
    ("max_completion_tokens", "max_tokens"),
    whole=lambda text: {"message": {"role": "assistant", "content": text}},
    piece=lambda text: {"delta": {"content": text}},
    opening={"delta": {"role": "assistant", "content": ""}}, closing={"delta": {}},
    top_logprobs=_chat_top_logprobs, logprobs=_chat_logprobs)


@dataclass(frozen=True)
class Job:
    """One request, checked: what the model thread runs."""
    prompt: list
    max_tokens: int
    sampler: Sampler
    stop: tuple
    stream: bool
    include_usage: bool
    top_logprobs: int | None      # None: no logprobs
    constraint: object = None     # runtime/constrained.Constraint, or None for free text
    tool_format: object = None    # runtime/tool_calls.ToolFormat the answer is parsed by, or None (no tools)
    tool_names: frozenset = frozenset()   # the functions the request declares


def _constraint(model, body):
    """The request's structured-output constraint: OpenAI's response_format ({"type": "json_object"}, or
    "json_schema" with {"json_schema": {"schema": ...}}) or llama-server's `json_schema` / `grammar` (GBNF); None
    for free text. A schema or grammar that cannot be compiled is a 400 naming the field."""
    asked = [f for f in ("response_format", "json_schema", "grammar") if body.get(f) not in (None, "")]
    if len(asked) > 1:
        raise RequestError(f"give one of {', '.join(asked)}", asked[1])
    if not asked:
        return None
    field, value = asked[0], body[asked[0]]
    if field == "response_format":
        kind = value.get("type") if isinstance(value, dict) else None
        if kind == "text":
            return None
        if kind == "json_object":
            schema = value.get("schema", {"type": "object"})
        elif kind == "json_schema" and isinstance(value.get("json_schema"), dict):
            schema = value["json_schema"].get("schema", {"type": "object"})
        else:
            raise RequestError("'response_format' must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                               "{\"type\": \"json_schema\", \"json_schema\": {\"schema\": {...}}}", field)
        args = {"json_schema": schema}
    elif field == "json_schema":
        if not isinstance(value, dict):
            raise RequestError("'json_schema' must be an object", field)
        args = {"json_schema": value}
    else:
        if not isinstance(value, str):
            raise RequestError("'grammar' must be a string (GBNF)", field)
        args = {"grammar": value}
    try:
        return model.constraint(**args)
    except ValueError as e:
        raise RequestError(str(e), field) from None


def make_job(endpoint: Endpoint, body, prompt, n_ctx, defaults: SamplerSettings, model=None) -> Job:
    _refuse_unimplemented(body)
    if _get(body, "n", "an integer", 1) != 1:
        raise RequestError("only n=1 is supported", "n")
    if not prompt:
        raise RequestError("the prompt is empty", endpoint.prompt_field)
    room = n_ctx - len(prompt)
    if room <= 0:
        raise RequestError(f"the prompt has {len(prompt)} tokens and the context holds {n_ctx} "
                           f"(qrun serve -c sets it)", endpoint.prompt_field, "context_length_exceeded")
    field = next((f for f in endpoint.max_tokens_fields if body.get(f) is not None), endpoint.max_tokens_fields[0])
    max_tokens = _get(body, field, "an integer", room)
    if max_tokens < 0:
        raise RequestError(f"'{field}' must be >= 0", field)
    stream = _get(body, "stream", "a boolean", False)
    options = _get(body, "stream_options", "an object", {})
    constraint, tool_format, funcs = _constraint(model, body) if model is not None else None, None, []
    if endpoint is CHAT and model is not None:
        mode, funcs = tool_setup(model, body)
        if mode != "none":
            tool_format = tool_calls.format_for(model.template_for(funcs).source)
        if mode == "required":              # the call is grammar-constrained: it always parses
            if constraint is not None:
                raise RequestError("a required tool call cannot also have a response format", "tool_choice")
            try:
                constraint = model.constraint(grammar=tool_format.grammar(funcs, _marker(model, tool_format)))
            except ValueError as e:
                raise RequestError(f"the tools' parameters cannot be used: {e}", "tools") from None
    return Job(prompt=prompt, max_tokens=min(max_tokens, room), sampler=_sampler(body, defaults),
               stop=_stop_strings(body), stream=stream, include_usage=bool(options.get("include_usage")),
               top_logprobs=endpoint.top_logprobs(body), constraint=constraint, tool_format=tool_format,
               tool_names=frozenset(f["name"] for f in funcs) if tool_format is not None else frozenset())


def embedding_inputs(body) -> list:
    """/v1/embeddings' `input`: a string, a list of strings, a list of token ids or a list of such lists."""
    given = body.get("input")
    if isinstance(given, str) or (isinstance(given, list) and given and all(type(t) is int for t in given)):
        return [given]
    if isinstance(given, list) and given and all(isinstance(t, str) or (isinstance(t, list) and t and all(
            type(x) is int for x in t)) for t in given):
        return given
    if given is None:
        raise RequestError("'input' is required", "input")
    raise RequestError("'input' must be a string, a list of strings, a list of token ids or a list of such lists "
                       "(none empty)", "input")


def _encoded(vector, encoding):
    if encoding == "base64":      # OpenAI's: the float32 values' little-endian bytes
        return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


# -- running it --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finish:
    reason: str                   # "stop" (end of generation or a stop string) or "length"
    stats: object                 # the Model's Stats of this request


@dataclass(frozen=True)
class Piece:
    text: str
    logprobs: list                # TokenLogprob of the tokens generated since the last piece (when asked for)


def generate(model, job: Job, should_stop, emit) -> Finish:
    """In the model thread: emit each text piece as Model.generate/chat would yield it (a Piece, with the
    log-probabilities of the tokens behind it when the job asks for them), then say why it ended. should_stop() is
    asked after every token (the client went away, the server is stopping)."""
    text = TextStream(job.stop)
    count, sent = 0, 0

    def piece(s):
        nonlocal sent
        records = model.logprobs[sent:]
        sent = len(model.logprobs)
        emit(Piece(s, records))

    with contextlib.closing(model.generate_tokens(job.prompt, job.max_tokens, job.sampler,
                                                  logprobs=job.top_logprobs, constraint=job.constraint)) as tokens:
        for token in tokens:
            count += 1
            out = text.feed(model.tokenizer.token_bytes(token, special=job.tool_format is not None))
            if out:
                piece(out)
            if text.stopped or should_stop():
                break
    tail = text.flush()
    if tail or sent < len(model.logprobs):
        piece(tail)
    reason = "stop" if text.stopped or count < job.max_tokens else "length"
    return Finish(reason, dataclasses.replace(model.stats))


class ModelThread:
    """The one thread that touches the Model (its KV cache is not thread-safe): jobs wait here and run whole, in
    order. numba's thread count belongs to the thread that set it, so the loading thread's (-t) is carried over."""

    def __init__(self, model):
        self.model = model
        self.stopping = threading.Event()     # set by stop(): every job ends at its next token
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kvant-model", initializer=numba.set_num_threads,
                                        initargs=(numba.get_num_threads(),))

    async def run(self, job: Job, cancelled: threading.Event | None = None):
        """Text pieces, then one Finish. Leaving early, or setting cancelled (the client went away), stops the job
        at its next token; a job cancelled before it started raises ClientGone."""
        loop = asyncio.get_running_loop()
        events = asyncio.Queue()
        cancelled = cancelled or threading.Event()

        def post(event):
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:          # the event loop is gone: nobody is listening
                cancelled.set()

        def should_stop():
            return cancelled.is_set() or self.stopping.is_set()

        def work():
            try:
                if cancelled.is_set():
                    raise ClientGone("the client went away before its turn")
                if self.stopping.is_set():
                    raise ShuttingDown("the server is shutting down")
                post(generate(self.model, job, should_stop, post))
            except Exception as e:        # handed to the request, which reports it
                post(e)

        self._pool.submit(work)
        try:
            while True:
                event = await events.get()
                if isinstance(event, Exception):
                    raise event
                yield event
                if isinstance(event, Finish):
                    return
        finally:
            cancelled.set()

    async def call(self, fn):
        """fn(model) run in the model thread, after the jobs before it; its result (or its exception)."""
        def work():
            if self.stopping.is_set():
                raise ShuttingDown("the server is shutting down")
            return fn(self.model)
        return await asyncio.wrap_future(self._pool.submit(work))

    def stop(self):
        """End the running job at its next token (its answer is sent, cut short) and refuse the waiting ones."""
        self.stopping.set()


# -- answering ---------------------------------------------------------------------------------------------------
def _marker(model, fmt) -> str:
    """The format's marker as a Lark literal: the token itself (`<[id]>`) where the vocabulary has it as one control
    token (Mistral's [TOOL_CALLS]: the model writes that token, never its letters), else its text."""
    ids = model.tokenizer.encode(fmt.marker, add_special=False, parse_special=True) if fmt.marker else []
    if len(ids) == 1 and not model.tokenizer.token_bytes(ids[0], special=False):
        return f"<[{ids[0]}]>"
    return json.dumps(fmt.marker)


def _tool_answer(job, text):
    """(message part, finish reason override or None) of a tools job's whole text: tool_calls where the model wrote
    calls to the declared functions in its format, else the text. A call after the format's marker that does not
    parse, or names no declared function, is a RequestError naming the problem (without the marker, such text is
    an answer)."""
    try:
        content, calls = job.tool_format.parse(text)
        unknown = [c.name for c in calls if c.name not in job.tool_names]
        marked = bool(job.tool_format.marker) and job.tool_format.marker in text
        if unknown and not marked:
            calls = []                    # a JSON answer, not a call
        elif unknown:
            raise tool_calls.ToolCallError(f"it calls {unknown[0]!r}, which is not one of the request's tools")
    except tool_calls.ToolCallError as e:
        raise RequestError(f"the model's tool call does not parse: {e}", "tools", "tool_call_parse_error") from None
    if not calls:
        return {"role": "assistant", "content": text}, None
    return {"role": "assistant", "content": content, "tool_calls": [c.openai() for c in calls]}, "tool_calls"


def _unsent(content, sent):
    """What of a tools answer's content is still to stream, after `sent` went out as it was written (the parsed
    content may differ from it in whitespace only around a call: then nothing more)."""
    return (content[len(sent):] if content and content.startswith(sent) else "") or None


def _choice(part, reason, logprobs=None):
    return {"index": 0, **part, "logprobs": logprobs, "finish_reason": reason}


def _usage(stats):
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.generated_tokens,
            "total_tokens": stats.prompt_tokens + stats.generated_tokens,
            "prompt_tokens_details": {"cached_tokens": stats.reused_tokens}}


async def _until_disconnected(receive, gone: threading.Event):
    """Set gone when the client closes its connection: with the body read, the server's next message is that."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


def _event(obj):
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _error_body(message, kind, param=None, code=None):
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def stats_line(stats):
    speed = stats.generated_tokens / stats.decode_seconds if stats.decode_seconds > 0 else 0.0
    return (f"[prompt {stats.prompt_tokens} tokens: {stats.reused_tokens} reused, {stats.prefilled_tokens} "
            f"prefilled; {stats.generated_tokens} generated, {speed:.1f} tok/s]")


async def _read_json(request):
    try:
        body = json.loads(await request.body())
    except ValueError as e:               # not JSON, or not UTF-8
        raise RequestError(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    return body


def build_app(model, name: str | None = None, defaults: SamplerSettings = SamplerSettings(), log=None,
              pooling: str | None = None) -> Starlette:
    """The ASGI app serving one Model. name: the model id it answers with (default: the file's name).
    defaults: sampling for fields a request leaves out. log: called with one line of stats per request.
    pooling: the embeddings' pooling (default: the file's, else mean; llama-server's --pooling)."""
    name = name or os.path.splitext(os.path.basename(model.path))[0]
    created = int(time.time())
    worker = ModelThread(model)

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def models(request):
        return JSONResponse({"object": "list",
                             "data": [{"id": name, "object": "model", "created": created, "owned_by": "kvant"}]})

    def finished(finish):
        if log is not None:
            log(stats_line(finish.stats))

    async def stream(endpoint, head, events, job):
        chunk = head(endpoint.chunk_object)
        offset, answer, sent = 0, "", 0   # a tools job's text so far, and how much of it went out as content
        async with contextlib.aclosing(events):
            if endpoint.opening is not None:
                yield _event({**chunk, "choices": [_choice(endpoint.opening, None)]})
            try:
                async for event in events:
                    if isinstance(event, Finish):
                        reason = event.reason
                        if job.tool_format is not None:
                            message, override = _tool_answer(job, answer)
                            delta = {k: v for k, v in message.items() if k not in ("role", "content")}
                            rest = _unsent(message.get("content"), answer[:sent])
                            delta = {"content": rest, **delta} if rest else delta
                            if "tool_calls" in delta:
                                delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(delta["tool_calls"])]
                            yield _event({**chunk, "choices": [_choice({"delta": delta}, None)]})
                            reason = override or reason
                        yield _event({**chunk, "choices": [_choice(endpoint.closing, reason)]})
                        if job.include_usage:
                            yield _event({**chunk, "choices": [], "usage": _usage(event.stats)})
                        finished(event)
                    elif job.tool_format is not None:   # text streams until a call may have begun
                        answer += event.text
                        ready = job.tool_format.streamable(answer)
                        if ready > sent:
                            yield _event({**chunk, "choices": [_choice(endpoint.piece(answer[sent:ready]), None)]})
                            sent = ready
                    else:
                        logprobs = None if job.top_logprobs is None else \
                            endpoint.logprobs(model, event.logprobs, offset)
                        offset += len(event.text)
                        yield _event({**chunk, "choices": [_choice(endpoint.piece(event.text), None, logprobs)]})
            except Exception as e:        # the 200 is already sent: the error travels as the last event
                yield _event(_error_body(f"{type(e).__name__}: {e}", "server_error"))
                return
        yield "data: [DONE]\n\n"

    def completion_handler(endpoint):
        async def handle(request):
            body = await _read_json(request)
            prompt = await run_in_threadpool(endpoint.prompt, model, body)
            # (compiling a schema or grammar can take a second: not on the event loop)
            job = await run_in_threadpool(make_job, endpoint, body, prompt, model.n_ctx, defaults, model)
            ident, now = f"{endpoint.id_prefix}-{uuid.uuid4().hex}", int(time.time())

            def head(kind):
                return {"id": ident, "object": kind, "created": now, "model": name}

            gone = threading.Event()
            events = worker.run(job, gone)
            if job.stream:        # Starlette notices a client gone at the next piece sent, and closes events
                return StreamingResponse(stream(endpoint, head, events, job),
                                         media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            pieces = []
            watcher = asyncio.create_task(_until_disconnected(request.receive, gone))
            try:
                async with contextlib.aclosing(events):
                    async for event in events:
                        if isinstance(event, Finish):
                            finish = event
                        else:
                            pieces.append(event)
            except ClientGone:
                return Response(status_code=499)      # nginx's "client closed request": nobody reads it
            finally:
                watcher.cancel()
            finished(finish)
            logprobs = None if job.top_logprobs is None else \
                endpoint.logprobs(model, [r for p in pieces for r in p.logprobs], 0)
            text, reason = "".join(p.text for p in pieces), finish.reason
            part = endpoint.whole(text)
            if job.tool_format is not None:
                message, override = _tool_answer(job, text)
                part, reason = {"message": message}, override or reason
            return JSONResponse({**head(endpoint.object), "choices": [_choice(part, reason, logprobs)],
                                 "usage": _usage(finish.stats)})
        return handle

    async def embeddings_handler(request):
        body = await _read_json(request)
        inputs = embedding_inputs(body)
        encoding = _get(body, "encoding_format", "a string", "float")
        if encoding not in ("float", "base64"):
            raise RequestError("'encoding_format' must be 'float' or 'base64'", "encoding_format")
        dimensions = _get(body, "dimensions", "an integer", None)
        if dimensions is not None and dimensions != model.config.d_model:
            raise RequestError(f"this model's embeddings have {model.config.d_model} dimensions; 'dimensions' "
                               f"cannot change that", "dimensions")

        if (pooling or embeddings.file_pooling(model.metadata)) == "none":
            raise RequestError("this server pools no embeddings (--pooling none): one vector per token has no "
                               "place in OpenAI's embeddings response; start it with --pooling mean, cls or last",
                               "input")

        def run(m):
            try:
                vectors = m.embed(inputs, pooling=pooling)
            except ValueError as e:          # an input too long for the context, ids outside the vocabulary
                raise RequestError(str(e), "input") from None
            return vectors, m.stats.prompt_tokens
        vectors, n_tokens = await worker.call(run)
        data = [{"object": "embedding", "index": i, "embedding": _encoded(v, encoding)} for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": data, "model": name,
                             "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}})

    async def request_error(request, e: RequestError):
        return JSONResponse(_error_body(str(e), "invalid_request_error", e.param, e.code), status_code=400)

    async def http_error(request, e: HTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return JSONResponse(_error_body(f"{e.detail}: {request.method} {request.url.path}", kind),
                            status_code=e.status_code, headers=e.headers)

    async def shutting_down(request, e: ShuttingDown):
        return JSONResponse(_error_body(str(e), "server_error"), status_code=503)

    async def server_error(request, e: Exception):
        return JSONResponse(_error_body(f"internal error: {type(e).__name__}: {e}", "server_error"), status_code=500)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/completions", completion_handler(COMPLETIONS), methods=["POST"]),
        Route("/v1/chat/completions", completion_handler(CHAT), methods=["POST"]),
        Route("/v1/embeddings", embeddings_handler, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={RequestError: request_error, HTTPException: http_error,
                                                       ShuttingDown: shutting_down, Exception: server_error})
    app.state.model_thread = worker
    return app


# -- the process -------------------------------------------------------------------------------------------------
def listen(host: str, port: int) -> socket.socket:
    """A listening socket, opened before the model loads so that a port in use fails at once, naming it."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def run(app, sock: socket.socket, log_level: str = "info") -> bool:
    """Serve build_app's app on sock with uvicorn until SIGINT or SIGTERM; False if it did not start. On the signal
    the running generation ends at its next token, so its response completes and uvicorn's graceful shutdown need
    not wait for it. Afterwards uvicorn raises the signal again under the handler the process had before: SIGINT
    as a KeyboardInterrupt (taken here), or nothing where SIGINT was ignored (a process started in the background
    by a shell); SIGTERM under its default handler ends the process there."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.model_thread.stop()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=GRACE_SECONDS)
    server = Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:         # Ctrl-C is how a server is stopped, not an error
        pass
    except SystemExit:                # uvicorn's way out of a failed startup, after logging why
        return False
    return server.started
