"""A chat template for a file that carries none: its family's, recognised by a special token of its vocabulary.

llama.cpp falls back to ChatML whatever the model, which a Gemma model answers with `<|im_start|>` over and over.
The first family whose marker token the vocabulary holds gives the template (written here, in each family's
published format); ChatML when none does.
"""
from __future__ import annotations

from .chat_template import CHATML

# Gemma (2 and 3): a system prompt opens the first user turn; the assistant's role is "model". Content may be a list
# of parts (OpenAI's shape): text parts trimmed, an image part as Gemma 3's <start_of_image>; a list system prompt
# gives its first part's text. Renders as Gemma 3's own template (tests/fixtures/chat_templates/extra).
GEMMA = """{{ bos_token }}
{%- macro text(content) -%}
    {%- if content is string -%}
        {{ content | trim }}
    {%- elif content is iterable and content is not mapping -%}
        {%- for part in content -%}
            {{ '<start_of_image>' if part['type'] == 'image' else (part['text'] | trim if part['type'] == 'text' else '') }}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception('Invalid content type') }}
    {%- endif -%}
{%- endmacro -%}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set system = messages[0]['content'] -%}
    {%- set prefix = (system if system is string else system[0]['text']) + '\n\n' -%}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set prefix = '' -%}
    {%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif -%}
    {{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}
    {{- (prefix if loop.first else '') + text(message['content']) }}
    {{- '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<start_of_turn>model\n' }}
{%- endif -%}"""

LLAMA3 = """{{ bos_token }}
{%- for message in messages -%}
    {{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif -%}"""

# Mistral's instruct format: [INST] user [/INST] answer</s>; a system prompt goes before the last user turn.
MISTRAL = """{{ bos_token }}
{%- set system = messages[0]['content'] if messages and messages[0]['role'] == 'system' else '' -%}
{%- set turns = messages[1:] if system else messages -%}
{%- for message in turns -%}
    {%- if message['role'] == 'user' -%}
        {{ '[INST] ' + (system + '\n\n' if system and loop.last else '') + message['content'] + '[/INST]' }}
    {%- elif message['role'] == 'assistant' -%}
        {{ ' ' + message['content'] + eos_token }}
    {%- endif -%}
{%- endfor -%}"""

# (marker token, family, template), the first match wins
FAMILIES = (
    ("<start_of_turn>", "Gemma", GEMMA),
    ("<|start_header_id|>", "Llama 3", LLAMA3),
    ("<|im_start|>", "ChatML", CHATML),
    ("[INST]", "Mistral", MISTRAL),
)


def fallback_template(tokens) -> tuple[str, str]:
    """(template, the one line that says which) for a vocabulary (token texts) whose file has no template."""
    vocab = set(tokens or ())
    for marker, family, source in FAMILIES:
        if marker in vocab:
            return source, f"the file has no chat template; using the {family} format (its vocabulary has {marker})"
    return CHATML, "the file has no chat template and no known family's tokens; using ChatML, as llama.cpp does"
