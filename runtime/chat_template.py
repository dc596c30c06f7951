"""Chat templates, rendered as transformers' apply_chat_template renders them, in jinja2's immutable sandbox (a
template from the internet is untrusted code: it may not touch attributes or mutate anything outside itself).

What a template sees is what transformers gives it (transformers/utils/chat_template_utils.py, read for these
facts): trim_blocks and lstrip_blocks; the loop controls ({% break %}, {% continue %}) and the {% generation %} tag
(its body rendered as it is); a `tojson` that does not escape HTML and takes indent, separators and sort_keys;
`raise_exception`, `strftime_now`, a `dict()` and a `namespace()` that refuses underscore names; the variables
`messages`, `tools`, `documents`, `add_generation_prompt`, the tokenizer's special tokens (bos_token, eos_token, ...)
and any extra keyword the caller passes (enable_thinking, ...). Inputs are rebuilt from plain JSON types first, and a
message's reasoning (reasoning_content, thinking or reasoning) is offered under both names templates read.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from jinja2 import TemplateError, nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

# llama.cpp's fallback when a file carries no template (and no family is recognised: chat_families.py).
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class ChatTemplateError(ValueError):
    """The chat template could not be compiled or rendered."""


def _raise(message):
    raise ChatTemplateError(f"chat template: {message}")


def now() -> datetime:
    """The time strftime_now formats (a function of its own so that tests can fix it)."""
    return datetime.now()


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _GenerationTag(Extension):
    """{% generation %}...{% endgeneration %}: transformers marks the assistant's tokens with it; the text is the
    body's."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


class _Namespace(Namespace):
    """jinja2's namespace() without underscore attributes (no way to CPython's internals through it)."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"a chat template cannot set the underscore attribute {name!r} on a namespace")


class _Dict:
    """dict() and dict.fromkeys() for templates, without the type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


def plain(value):
    """value rebuilt from JSON's types (str, int, float, bool, None, dicts and lists; tuples kept); anything else
    becomes the inert text "<TypeName>", as transformers does, so no object with methods reaches the template."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    for base in (bool, str, int, float):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    return f"<{type(value).__name__}>"


def _with_reasoning_aliases(message):
    if not isinstance(message, dict):
        return message
    reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: now().strftime(fmt), dict=_Dict(),
                       namespace=_Namespace)
    return env


class ChatTemplate:
    """A compiled chat template. special_tokens: the texts of the tokenizer's special tokens by transformers' names
    (bos_token, eos_token, unk_token, pad_token), given to the template as variables."""

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = "", special_tokens=None):
        self.source = source or CHATML
        try:
            self._template = _environment().from_string(self.source)
        except TemplateError as e:
            raise ChatTemplateError(f"chat template does not compile: {e}") from None
        self._specials = {"bos_token": bos_token, "eos_token": eos_token, **(special_tokens or {})}

    def render(self, messages, add_generation_prompt=True, tools=None, documents=None, **kwargs) -> str:
        """The prompt text of a conversation. messages: dicts with a 'role' (content, tool_calls, ... as the
        template reads them); tools: JSON schemas ({"type": "function", "function": {...}}); documents: dicts;
        kwargs: further variables (enable_thinking=False, ...)."""
        if not isinstance(messages, (list, tuple)) or not all(isinstance(m, Mapping) and "role" in m
                                                                for m in messages):
            raise ChatTemplateError("messages must be a list of dicts, each with a 'role'")
        if documents is not None and not all(isinstance(d, Mapping) for d in documents):
            raise ChatTemplateError("documents must be dicts")
        chat = [_with_reasoning_aliases(m) for m in plain(list(messages))]
        variables = {**self._specials, **plain(kwargs)}
        try:
            return self._template.render(messages=chat, tools=plain(tools), documents=plain(documents),
                                         add_generation_prompt=add_generation_prompt, **variables)
        except ChatTemplateError:
            raise
        except TemplateError as e:
            raise ChatTemplateError(f"chat template failed to render: {e}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError,
                RecursionError) as e:
            raise ChatTemplateError(f"chat template failed to render: {type(e).__name__}: {e}") from None
