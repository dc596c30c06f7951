"""70 real chat templates (llama.cpp's collection: Qwen, Llama, Mistral, Gemma, DeepSeek, Kimi, GLM, Command-R,
Granite, Phi, Hermes, ...) rendered by kvant exactly as transformers renders them, for conversations with a system
prompt, several turns, tools, a tool call and its result; or both raise. The renderings are stored by
tests/make_chat_template_fixtures.py (which says how to regenerate them)."""
import datetime
import json
import os

import pytest

from kvant.runtime import chat_template
from kvant.runtime.chat_template import ChatTemplate, ChatTemplateError
from make_chat_template_fixtures import CONVERSATIONS

HERE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures", "chat_templates")
with open(os.path.join(HERE, "expected.json"), encoding="utf-8") as f:
    EXPECTED = json.load(f)


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch):
    monkeypatch.setattr(chat_template, "now", lambda: datetime.datetime.fromisoformat(EXPECTED["now"]))


def test_the_collection_is_large_and_renders():
    assert len(EXPECTED["templates"]) >= 50
    # (content given as a list of parts renders in about half of them: many templates take text only)
    plain = [c for c in CONVERSATIONS if c != "content parts"]
    rendered = sum("text" in t[c] for t in EXPECTED["templates"].values() for c in plain)
    assert rendered >= 0.9 * len(EXPECTED["templates"]) * len(plain)
    assert sum("text" in t["content parts"] for t in EXPECTED["templates"].values()) >= 30


def template_text(name):
    """A template of llama.cpp's collection (templates/) or one of a model it lacks (extra/)."""
    folder = "templates" if os.path.exists(os.path.join(HERE, "templates", name)) else "extra"
    with open(os.path.join(HERE, folder, name), encoding="utf-8") as f:
        return f.read()


def renders_as_transformers(source, name) -> int:
    """Template source renders every conversation as transformers rendered template `name`, or raises where that
    did; returns how many rendered."""
    template = ChatTemplate(source, special_tokens=EXPECTED["specials"])
    renders = 0
    for conv, want in EXPECTED["templates"][name].items():
        messages, tools = CONVERSATIONS[conv]
        if "error" in want:
            with pytest.raises(ChatTemplateError):
                template.render(messages, tools=tools)
        else:
            assert template.render(messages, tools=tools) == want["text"], conv
            renders += 1
    return renders


@pytest.mark.parametrize("name", sorted(EXPECTED["templates"]))
def test_renders_as_transformers(name):
    renders_as_transformers(template_text(name), name)


# ---------------------------------------------------------------- a file without a template: its family's
from kvant.runtime.chat_families import FAMILIES, GEMMA, fallback_template  # noqa: E402


@pytest.mark.parametrize("marker, family", [(m, f) for m, f, _ in FAMILIES])
def test_family_recognised_by_its_special_token(marker, family):
    source, note = fallback_template(["<unk>", "a", marker, "b"])
    assert family in note and marker in note
    assert source == next(s for m, f, s in FAMILIES if m == marker)
    ChatTemplate(source).render([{"role": "user", "content": "x"}])


def test_unknown_family_falls_back_to_chatml_as_llama_cpp():
    source, note = fallback_template(["a", "b"])
    assert source == chat_template.CHATML and "ChatML" in note


def test_gemma_format_renders_as_gemma_3s_own_template():
    """The built-in Gemma format renders every conversation exactly as transformers renders Gemma 3's own template
    (tests/fixtures/chat_templates/extra), or raises where that one does (tool results break its alternation)."""
    assert renders_as_transformers(GEMMA, "google-gemma-3-it.jinja") >= 5


def test_gemma_format_is_gemma_2s_where_that_one_renders():
    gemma2 = EXPECTED["templates"]["google-gemma-2-2b-it.jinja"]
    template = ChatTemplate(GEMMA, special_tokens=EXPECTED["specials"])
    for conv, want in gemma2.items():
        if "text" in want:
            assert template.render(CONVERSATIONS[conv][0]) == want["text"], conv
