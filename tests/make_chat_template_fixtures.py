"""Real chat templates and transformers' renderings of them, for tests/runtime/test_chat_templates_real.py.

    pip install transformers        # not a project dependency (no torch needed: only its chat template code runs)
    python tests/make_chat_template_fixtures.py [--sdist llama_cpp_python-X.tar.gz]

The templates are the collection llama.cpp keeps for its own template tests (vendor/llama.cpp/models/templates in the
llama-cpp-python sdist, fetched with `pip download llama-cpp-python --no-deps --no-binary :all:` when not given):
Qwen, Llama, Mistral, Gemma, DeepSeek, Kimi, GLM, Command-R, Granite, Phi, Hermes and more, as their model repos ship
them. They are copied into tests/fixtures/chat_templates/templates/, joined by those in
tests/fixtures/chat_templates/extra/ (templates of models kvant's catalog runs that the collection lacks, as their
model repos ship them: Gemma 3's, from google/gemma-3-*-it's tokenizer_config.json), and each is rendered by transformers'
render_jinja_template (what apply_chat_template calls) for every conversation in CONVERSATIONS, with
add_generation_prompt, bos_token "<s>", eos_token "</s>" and strftime_now fixed at FIXED_NOW; the text, or the error
when transformers raises, goes to tests/fixtures/chat_templates/expected.json.
"""
import argparse
import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "chat_templates")
EXTRA = os.path.join(OUT, "extra")
FIXED_NOW = datetime.datetime(2026, 3, 14, 9, 26, 53)
SPECIALS = {"bos_token": "<s>", "eos_token": "</s>"}

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city's name, e.g. Москва"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
CALL = {"id": "abc123xyz", "type": "function", "function": {"name": "get_weather",
                                                         "arguments": {"city": "Москва", "unit": "celsius"}}}
# name -> (messages, tools); the call id is 9 letters and digits, as the Mistral templates demand
CONVERSATIONS = {
    "one user turn": ([{"role": "user", "content": "Name three rivers."}], None),
    "system and turns": ([
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Привет! Как дела?"},
        {"role": "assistant", "content": "Хорошо, спасибо."},
        {"role": "user", "content": "What is 2 + 2?"}], None),
    "turns without system": ([
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Tell me a joke."}], None),
    "tools offered": ([
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "What's the weather in Moscow?"}], [WEATHER]),
    "tool call and result": ([
        {"role": "user", "content": "What's the weather in Moscow?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "abc123xyz", "name": "get_weather", "content": "{\"temperature\": -3}"}],
        [WEATHER]),
    "content parts": ([
        {"role": "system", "content": [{"type": "text", "text": "Answer in one word."}]},
        {"role": "user", "content": [{"type": "text", "text": " Столица Франции? "}]}], None),
}


def sdist_templates(sdist):
    if sdist is None:
        tmp = tempfile.mkdtemp()
        subprocess.run([sys.executable, "-m", "pip", "download", "llama-cpp-python", "--no-deps", "--no-binary",
                        ":all:", "-d", tmp], check=True)
        sdist = glob.glob(os.path.join(tmp, "llama_cpp_python-*.tar.gz"))[0]
    out = tempfile.mkdtemp()
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/models/templates/" in m.name
                   and m.name.endswith(".jinja")]
        tar.extractall(out, members=members, filter="data")
    return sorted(glob.glob(os.path.join(out, "**", "*.jinja"), recursive=True)), os.path.basename(sdist)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sdist", help="a llama-cpp-python sdist (default: pip download the newest)")
    args = ap.parse_args()
    from transformers.utils import chat_template_utils as ctu

    class FixedNow(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return FIXED_NOW
    ctu.datetime = FixedNow

    paths, source = sdist_templates(args.sdist)
    templates = os.path.join(OUT, "templates")
    shutil.rmtree(templates, ignore_errors=True)
    os.makedirs(templates)
    expected = {"source": source, "transformers": __import__("transformers").__version__, "specials": SPECIALS,
                "now": FIXED_NOW.isoformat(), "templates": {}}
    for path in paths:
        shutil.copyfile(path, os.path.join(templates, os.path.basename(path)))
    for path in paths + sorted(glob.glob(os.path.join(EXTRA, "*.jinja"))):
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as f:
            source_text = f.read()
        rendered = {}
        for conv, (messages, tools) in CONVERSATIONS.items():
            try:
                out, _ = ctu.render_jinja_template([messages], tools=tools, chat_template=source_text,
                                                   add_generation_prompt=True, **SPECIALS)
                rendered[conv] = {"text": out[0]}
            except Exception as e:     # noqa: BLE001 - the template's own raise_exception, or a render failure
                rendered[conv] = {"error": f"{type(e).__name__}: {e}"[:300]}
        expected["templates"][name] = rendered
    with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
    ok = sum("text" in r for t in expected["templates"].values() for r in t.values())
    print(f"{len(expected['templates'])} templates, {ok} renderings, the rest raise in transformers")


if __name__ == "__main__":
    main()
