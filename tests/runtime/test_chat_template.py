import pytest

from kvant.runtime.chat_template import CHATML, ChatTemplate, ChatTemplateError


def test_chatml_fallback_renders_generation_prompt():
    out = ChatTemplate(None).render([{"role": "user", "content": "hi"}])
    assert out == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert ChatTemplate(None).source == CHATML


def test_bos_token_and_raise_exception_available():
    t = ChatTemplate("{{ bos_token }}{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}"
                     "{% endif %}{{ messages[0]['content'] }}", bos_token="<s>")
    assert t.render([{"role": "user", "content": "x"}]) == "<s>x"
    with pytest.raises(ChatTemplateError, match="user first"):
        t.render([{"role": "system", "content": "x"}])


def test_sandbox_blocks_attribute_escapes():
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ChatTemplateError, match="unsafe"):
        ChatTemplate(evil).render([{"role": "user", "content": "x"}])


def test_sandbox_is_immutable():
    t = ChatTemplate("{% set x = messages.append({'role': 'user', 'content': 'y'}) %}{{ messages|length }}")
    with pytest.raises(ChatTemplateError):
        t.render([{"role": "user", "content": "x"}])


def test_template_syntax_error_is_one_clear_error():
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for %}")


def test_messages_need_role_and_content():
    with pytest.raises(ChatTemplateError):
        ChatTemplate(None).render([{"content": "x"}])
