"""Tool calls through qrun serve: tools rendered by real chat templates (Qwen 2.5's Hermes-style `<tool_call>`, Llama
3.1's JSON, Mistral's `[TOOL_CALLS]`), the model's answer parsed into OpenAI's tool_calls, streamed and not; with
tool_choice "required" or a named function the call is grammar-constrained, so even a random model's always parses."""
import json
import os

import pytest
from starlette.testclient import TestClient

from kvant.runtime import Model, tool_calls
from kvant.runtime.server import build_app

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "chat_templates",
                         "templates")
FAMILIES = {"hermes": "Qwen-Qwen2.5-7B-Instruct.jinja", "llama3": "meta-llama-Llama-3.1-8B-Instruct.jinja",
            "mistral": "mistralai-Mistral-Nemo-Instruct-2407.jinja"}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "MSK"]}}, "required": ["zone"],
    "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What's the weather in Moscow?"}]


def _template(family):
    with open(os.path.join(TEMPLATES, FAMILIES[family]), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_client(request, tiny):
    m = Model(tiny, n_threads=1, n_ctx=2048, chat_template=_template(request.param))   # the templates are long
    with TestClient(build_app(m)) as c:
        yield request.param, c


def _post(client, **body):
    r = client.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 120, "temperature": 1.0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def _events(r):
    assert r.status_code == 200, r.text
    lines = [x for x in r.text.split("\n\n") if x]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(x[len("data: "):]) for x in lines[:-1]]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_required_call_always_parses(family_client, choice):
    family, client = family_client
    assert tool_calls.format_for(_template(family)).name == family
    for seed in range(3):
        r = _post(client, tools=[WEATHER, TIME], tool_choice=choice, seed=seed)
        assert r["choices"][0]["finish_reason"] == "tool_calls"
        calls = r["choices"][0]["message"]["tool_calls"]
        assert len(calls) == 1 and calls[0]["type"] == "function" and calls[0]["id"]
        f = calls[0]["function"]
        args = json.loads(f["arguments"])
        if isinstance(choice, dict):
            assert f["name"] == "get_time" and args["zone"] in ("UTC", "MSK")
        else:
            assert f["name"] in ("get_weather", "get_time")
            if f["name"] == "get_weather":
                assert args["unit"] in ("celsius", "fahrenheit") and isinstance(args["city"], str)


def test_streamed_call_equals_the_whole_one(family_client):
    family, client = family_client
    body = {"tools": [WEATHER], "tool_choice": "required", "seed": 5, "temperature": 0}
    whole = _post(client, **body)["choices"][0]["message"]["tool_calls"][0]
    chunks = _events(client.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 120, "stream": True,
                                                                  **body}))
    deltas = [c["choices"][0] for c in chunks if c.get("choices")]
    streamed = [t for d in deltas for t in d["delta"].get("tool_calls", [])]
    assert len(streamed) == 1 and streamed[0]["index"] == 0
    assert streamed[0]["function"] == whole["function"]
    assert deltas[-1]["finish_reason"] == "tool_calls"


def test_a_conversation_with_calls_and_results_renders(family_client):
    family, client = family_client
    messages = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "abc123xyz", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\": \"Moscow\", \"unit\": \"celsius\"}"}}]},
        {"role": "tool", "tool_call_id": "abc123xyz", "name": "get_weather", "content": "{\"temperature\": -3}"}]
    r = client.post("/v1/chat/completions", json={"messages": messages, "tools": [WEATHER], "max_tokens": 4})
    assert r.status_code == 200, r.text


def test_auto_and_none(family_client):
    family, client = family_client
    r = _post(client, tools=[WEATHER], tool_choice="auto", max_tokens=6, seed=1)
    assert r["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
    r = _post(client, tools=[WEATHER], tool_choice="none", max_tokens=6, seed=1)
    assert "tool_calls" not in r["choices"][0]["message"]


@pytest.mark.parametrize("body, field", [
    ({"tools": "x"}, "tools"), ({"tools": [{"type": "function"}]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice")])
def test_bad_tools_are_a_400(family_client, body, field):
    _, client = family_client
    r = client.post("/v1/chat/completions", json={"messages": ASK, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field


def test_a_call_that_does_not_parse_under_auto_is_a_400_and_the_server_goes_on(tiny, monkeypatch):
    m = Model(tiny, n_threads=1, n_ctx=2048, chat_template=_template("hermes"))
    broken = m.tokenizer.encode('<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>',
                                add_special=False)
    real = m.generate_tokens

    def scripted(*args, **kwargs):
        yield from broken
    with TestClient(build_app(m)) as client:
        monkeypatch.setattr(m, "generate_tokens", scripted)
        r = client.post("/v1/chat/completions", json={"messages": ASK, "tools": [WEATHER]})
        assert r.status_code == 400
        assert "does not parse" in r.json()["error"]["message"] and "\n" not in r.json()["error"]["message"]
        monkeypatch.setattr(m, "generate_tokens", real)
        assert _post(client, max_tokens=2)["usage"]["completion_tokens"] <= 2


@pytest.mark.parametrize("fmt, text, name, args", [
    ("hermes", 'ok <tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', "f", {"a": 1}),
    ("mistral", '[TOOL_CALLS][{"name": "g", "arguments": "{\\"b\\": 2}"}]', "g", {"b": 2}),
    ("llama3", '<|python_tag|>{"name": "h", "parameters": {"c": "x"}}', "h", {"c": "x"}),
    ("json", '{"name": "k", "arguments": {}}', "k", {})])
def test_parsers(fmt, text, name, args):
    f = next(f for f in tool_calls.FORMATS + (tool_calls.JSON_FORMAT,) if f.name == fmt)
    content, calls = f.parse(text)
    assert [(c.name, c.arguments) for c in calls] == [(name, args)]
    assert f.parse("just text") == ("just text", [])


@pytest.mark.parametrize("family, answer, status, content", [
    ("llama3", '{"name": "person", "age": 3}', 200, True),           # a JSON answer naming no tool: text
    ("llama3", '{"not json', 200, True),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}', 200, False),
    ("hermes", '<tool_call>\n{"name": "launch", "arguments": {}}\n</tool_call>', 400, None),   # an undeclared tool
])
def test_auto_answers_are_calls_only_to_declared_tools(tiny, monkeypatch, family, answer, status, content):
    m = Model(tiny, n_threads=1, n_ctx=2048, chat_template=_template(family))
    scripted = m.tokenizer.encode(answer, add_special=False)
    with TestClient(build_app(m)) as client:
        def scripted_tokens(*args, **kwargs):
            yield from scripted
        monkeypatch.setattr(m, "generate_tokens", scripted_tokens)
        r = client.post("/v1/chat/completions", json={"messages": ASK, "tools": [WEATHER]})
    assert r.status_code == status, r.text
    if status == 200:
        message = r.json()["choices"][0]["message"]
        assert ("tool_calls" not in message) == content
        if content:
            assert message["content"] == answer


def test_unusable_tool_parameters_are_a_400(family_client):
    _, client = family_client
    bad = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"s": {"type": "string", "pattern": "(?=a)b"}}}}}
    r = client.post("/v1/chat/completions", json={"messages": ASK, "tools": [bad], "tool_choice": "required"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
    r = client.post("/v1/chat/completions", json={"messages": ASK, "tools": [WEATHER],
                                                  "tool_choice": {"type": "function", "function": "f"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"


def test_a_files_tool_use_template_renders_conversations_with_tools(tmp_path):
    """A file with a second template named tool_use (tokenizer.chat_template.tool_use) renders with it when tools are
    offered, as llama.cpp and transformers do, and its tool-call format is the one parsed; without tools, and when a
    template is given, the chat template."""
    from tiny_model import TEMPLATE, write_tiny_model
    path = str(write_tiny_model(tmp_path / "t.gguf", tool_use_template=_template("hermes")))
    m = Model(path, n_threads=1, n_ctx=2048)
    assert m.metadata["tokenizer.chat_template.tool_use"] == _template("hermes")
    assert m.template_for(None).source == TEMPLATE and m.template_for([WEATHER]).source == _template("hermes")
    assert Model(path, n_threads=1, chat_template=TEMPLATE).tool_template is None
    with TestClient(build_app(m)) as client:
        r = _post(client, tools=[WEATHER], tool_choice="required", seed=1)
        assert r["choices"][0]["finish_reason"] == "tool_calls"
        json.loads(r["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
        from kvant.runtime.server import chat_prompt
        shown = m.detokenize(chat_prompt(m, {"messages": ASK, "tools": [WEATHER]}), special=True)
        assert "<tools>" in shown and "get_weather" in shown
        assert "<tools>" not in m.detokenize(chat_prompt(m, {"messages": ASK}), special=True)


@pytest.mark.parametrize("name, text, ready", [
    ("hermes", "Let me check.\n<tool_call>\n{", len("Let me check.")),
    ("hermes", "Let me check. <tool", len("Let me check.")),
    ("hermes", "Plain words", len("Plain words")),
    ("hermes", "\nLeading space", 0),
    ("mistral", "Sure[TOOL_CALLS][{", len("Sure")),
    ("mistral", "Sure [TOOL_", len("Sure")),
    ("llama3", '{"name"', 0), ("llama3", "<|python", 0), ("llama3", "<|python_tag|>{", 0), ("llama3", " ", 0),
    ("llama3", " It is sunny", len(" It is sunny")),
    ("json", "{", 0), ("json", "It is {", len("It is {"))])
def test_streamable_text_stops_where_a_call_may_begin(name, text, ready):
    fmt = next(f for f in tool_calls.FORMATS + (tool_calls.JSON_FORMAT,) if f.name == name)
    assert fmt.streamable(text) == ready


@pytest.mark.parametrize("family, answer", [
    ("hermes", 'Let me look that up.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", '
               '"unit": "celsius"}}\n</tool_call>'),
    ("hermes", "No tools needed: it is sunny."),
    ("mistral", 'Checking.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}]'),
    ("llama3", "It is sunny in Oslo today."),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Oslo", "unit": "celsius"}}')])
def test_streamed_content_under_tools_arrives_before_the_end_and_equals_the_whole(tiny, monkeypatch, family, answer):
    """Under tool_choice auto, text streams as it is written up to where a call may begin; the content of the
    stream and the calls equal the non-streamed answer's."""
    m = Model(tiny, n_threads=1, n_ctx=2048, chat_template=_template(family))
    scripted = m.tokenizer.encode(answer, add_special=False, parse_special=True)
    body = {"messages": ASK, "tools": [WEATHER]}
    with TestClient(build_app(m)) as client:
        def scripted_tokens(*args, **kwargs):
            yield from scripted
        monkeypatch.setattr(m, "generate_tokens", scripted_tokens)
        whole = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
        chunks = _events(client.post("/v1/chat/completions", json={**body, "stream": True}))
    choices = [c["choices"][0] for c in chunks if c.get("choices")]
    pieces = [c["delta"].get("content") or "" for c in choices]
    assert "".join(pieces) == (whole["content"] or "")
    calls = [t for c in choices for t in c["delta"].get("tool_calls", [])]
    assert [c["function"] for c in calls] == [c["function"] for c in whole.get("tool_calls", [])]
    if whole["content"] and len(whole["content"]) > 8:     # the first words went out before the answer ended
        end = next(i for i, c in enumerate(choices) if c["finish_reason"])
        assert next(i for i, p in enumerate(pieces) if p) < end - 1
