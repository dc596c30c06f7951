"""Tool calls in the formats real models write them, parsed into OpenAI's `tool_calls`, and the grammar that makes a
required call (tool_choice "required" or a named function) always parse.

The format is told by the chat template, which is what taught the model to write it:
  hermes   `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call (Hermes, Qwen 2.5-3, ...)
  mistral  `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`
  llama3   a JSON object `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>` (Llama 3.1-3.3)
  json     a JSON object `{"name": ..., "arguments": {...}}` (a template that names none of the above)
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Callable


class ToolCallError(ValueError):
    """Tools or a tool choice the request cannot have, or a call the model wrote that does not parse."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict
    id: str

    def openai(self) -> dict:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)}}


def _call(obj, args_key="arguments") -> ToolCall:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise ToolCallError(f"a tool call must be an object with a 'name', got {json.dumps(obj)[:80]}")
    args = obj.get(args_key, obj.get("arguments", {}))
    if isinstance(args, str):             # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            raise ToolCallError(f"the arguments of tool call {obj['name']!r} are not JSON") from None
    if not isinstance(args, dict):
        raise ToolCallError(f"the arguments of tool call {obj['name']!r} are not an object")
    return ToolCall(obj["name"], args, "call_" + uuid.uuid4().hex[:24])


def _json(text, what):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ToolCallError(f"{what} is not valid JSON ({e.msg} at character {e.pos})") from None


_HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.S)


def _parse_hermes(text):
    blocks = _HERMES.findall(text)
    if not blocks:
        return text, []
    content = _HERMES.sub("", text).strip()
    return content or None, [_call(_json(b.strip(), "a <tool_call> block")) for b in blocks]


def _parse_mistral(text):
    head, marker, rest = text.partition("[TOOL_CALLS]")
    if not marker:
        return text, []
    calls = _json(rest.strip(), "the [TOOL_CALLS] list")
    calls = calls if isinstance(calls, list) else [calls]
    return head.strip() or None, [_call(c) for c in calls]


def _parse_json_object(args_key):
    """A format with no marker: an answer that is not exactly a JSON object with a name is the model's text (a JSON
    answer the user asked for stays text unless its name is a declared tool: the caller checks)."""
    def parse(text):
        body = text.strip().removeprefix("<|python_tag|>").strip()
        try:
            obj = json.loads(body) if body.startswith("{") else None
            return (None, [_call(obj, args_key)]) if isinstance(obj, dict) and "name" in obj else (text, [])
        except (json.JSONDecodeError, ToolCallError):
            return text, []
    return parse


def _call_schema(tools, args_key):
    """A JSON schema of one call of any of tools (name fixed, arguments by the tool's parameters)."""
    options = [{"type": "object", "properties": {"name": {"const": t["name"]},
                                                 args_key: t.get("parameters") or {"type": "object"}},
                "required": ["name", args_key], "additionalProperties": False} for t in tools]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _compact(schema) -> str:
    """%json of a schema written compactly (llguidance's x-guidance option, read at the top level only: no room for
    a model to wander off into whitespace)."""
    return "%json " + json.dumps({**schema, "x-guidance": {"whitespace_flexible": False}})


@dataclass(frozen=True)
class ToolFormat:
    name: str
    marker: str                             # in the chat template: it teaches this format; "" for none
    parse: Callable                         # text -> (content or None, [ToolCall])
    grammar: Callable                       # (functions, the marker as a Lark literal) -> a grammar of one call
    calls_anywhere: bool = True             # a call starts at the marker wherever it is; else it is the whole answer

    def streamable(self, text: str) -> int:
        """How many leading characters of an answer so far are text whatever comes next, so that they can be
        streamed as content before the answer ends: all before a call's start or what may still become one."""
        if not self.calls_anywhere:          # a JSON object (after the marker token, where there is one) is a call
            body = text.lstrip()
            starts = ("{", self.marker) if self.marker else ("{",)
            undecided = not body or body.startswith(starts) or self.marker.startswith(body)
            return 0 if undecided else len(text)
        if not text or text[0].isspace():    # stripped before a call, kept in a plain answer: known at the end
            return 0
        found = text.find(self.marker)
        if found < 0:                         # hold a tail that may be the marker's beginning
            found = len(text) - next((k for k in range(min(len(self.marker) - 1, len(text)), 0, -1)
                                      if text.endswith(self.marker[:k])), 0)
        return len(text[:found].rstrip())     # (whitespace before a call is stripped too)


FORMATS = (
    ToolFormat("hermes", "<tool_call>", _parse_hermes,
               lambda tools, marker: f'start: {marker} "\\n" call "\\n</tool_call>"\ncall: '
                                     + _compact(_call_schema(tools, "arguments"))),
    ToolFormat("mistral", "[TOOL_CALLS]", _parse_mistral,
               lambda tools, marker: f"start: {marker} calls\ncalls: "
                                     + _compact({"type": "array", "items": _call_schema(tools, "arguments"),
                                                 "minItems": 1, "maxItems": 1})),
    ToolFormat("llama3", "<|python_tag|>", _parse_json_object("parameters"),
               lambda tools, marker: "start: call\ncall: " + _compact(_call_schema(tools, "parameters")), False),
)
JSON_FORMAT = ToolFormat("json", "", _parse_json_object("arguments"),
                         lambda tools, marker: "start: call\ncall: " + _compact(_call_schema(tools, "arguments")), False)


def format_for(template_source: str) -> ToolFormat:
    return next((f for f in FORMATS if f.marker in template_source), JSON_FORMAT)


def functions(tools) -> list[dict]:
    """OpenAI's tools ([{"type": "function", "function": {"name", "description", "parameters"}}]) checked; the
    function objects."""
    if not isinstance(tools, list):
        raise ToolCallError("'tools' must be a list of {\"type\": \"function\", \"function\": {...}}")
    out = []
    for i, t in enumerate(tools):
        f = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise ToolCallError(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}")
        if "parameters" in f and not isinstance(f["parameters"], dict):
            raise ToolCallError(f"tools[{i}].function.parameters must be a JSON schema object")
        out.append(f)
    return out


def chosen(tool_choice, funcs) -> tuple[str, list[dict]]:
    """(mode "none" | "auto" | "required", the functions a required call may name) of OpenAI's tool_choice."""
    if tool_choice is None:
        return ("auto" if funcs else "none"), funcs
    if tool_choice in ("none", "auto", "required"):
        if tool_choice == "required" and not funcs:
            raise ToolCallError("tool_choice 'required' needs tools")
        return tool_choice, funcs
    function = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    match = [f for f in funcs if f["name"] == name]
    if not match:
        raise ToolCallError(f"tool_choice names no function of 'tools': {json.dumps(tool_choice)[:80]}")
    return "required", match
