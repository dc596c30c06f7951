"""qrun serve: the OpenAI-compatible app through starlette's TestClient on a tiny random model (shapes, streaming,
stop, max_tokens, one request at a time, 400s), one greedy chat on SmolLM2 equal to Model.chat, and the command
itself as a process on a free port."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from starlette.testclient import TestClient

from kvant.runtime import Model
from kvant.runtime.cli import main
from kvant.runtime.sampling import SamplerSettings
from kvant.runtime.server import COMPLETIONS, Finish, ModelThread, Piece, build_app, completion_prompt, make_job
from tiny_model import write_tiny_model

GREEDY = {"temperature": 0}
HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf"))


@pytest.fixture(scope="module")
def model(tiny):
    return Model(tiny, n_threads=1)


@pytest.fixture(scope="module")
def client(model):
    with TestClient(build_app(model)) as c:
        yield c


def complete(client, **body):
    r = client.post("/v1/completions", json={"prompt": "the the", **GREEDY, **body})
    assert r.status_code == 200, r.text
    return r.json()


def chat(client, messages=HELLO, **body):
    r = client.post("/v1/chat/completions", json={"messages": messages, **GREEDY, **body})
    assert r.status_code == 200, r.text
    return r.json()


def events(response):
    """The JSON objects of a server-sent event stream, checking it ends with [DONE]."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[len("data: "):]) for line in lines[:-1]]


def test_health_and_models(client, tiny):
    assert client.get("/health").json() == {"status": "ok"}
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == [os.path.basename(tiny)[:-len(".gguf")]]


def test_completion_shape_and_text_equal_generate(client, model):
    r = complete(client, max_tokens=10)
    assert r["object"] == "text_completion" and r["id"].startswith("cmpl-") and isinstance(r["created"], int)
    assert r["model"] == "tiny"
    (choice,) = r["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    n_prompt = len(model.tokenize("the the", special=True))
    assert r["usage"]["prompt_tokens"] == n_prompt and r["usage"]["completion_tokens"] == 10
    assert r["usage"]["total_tokens"] == n_prompt + 10
    assert choice["text"] == model.generate("the the", max_tokens=10, temperature=0)


def test_chat_shape_and_text_equal_chat(client, model):
    r = chat(client, max_tokens=8)
    assert r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-")
    (choice,) = r["choices"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    assert choice["message"]["content"] == model.chat(HELLO, max_tokens=8, temperature=0)
    assert r["usage"]["completion_tokens"] == 8


def test_completion_stream_chunks_then_done(client):
    whole = complete(client, max_tokens=9)
    chunks = events(client.post("/v1/completions", json={"prompt": "the the", "max_tokens": 9, "stream": True,
                                                         **GREEDY}))
    assert {c["object"] for c in chunks} == {"text_completion"} and len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["length"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]


def test_chat_stream_role_first_then_deltas_and_usage(client):
    whole = chat(client, max_tokens=7)
    chunks = events(client.post("/v1/chat/completions", json={
        "messages": HELLO, "max_tokens": 7, "stream": True, "stream_options": {"include_usage": True}, **GREEDY}))
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    *deltas, last, usage = chunks
    assert last["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 7
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in deltas)
    assert text == whole["choices"][0]["message"]["content"]


def test_stop_string_and_list_end_the_text_before_it(client):
    text = complete(client, max_tokens=16)["choices"][0]["text"]
    stop = text[4:6]
    expected = text[:text.find(stop)]
    for value in (stop, ["never in the text", stop]):
        r = complete(client, max_tokens=16, stop=value)
        assert r["choices"][0] == {"index": 0, "text": expected, "logprobs": None, "finish_reason": "stop"}
        chunks = events(client.post("/v1/completions", json={"prompt": "the the", "max_tokens": 16, "stop": value,
                                                             "stream": True, **GREEDY}))
        assert "".join(c["choices"][0]["text"] for c in chunks) == expected
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_zero_and_clamped_to_the_context(client, model):
    r = complete(client, max_tokens=0)
    assert r["choices"][0]["text"] == "" and r["choices"][0]["finish_reason"] == "length"
    r = complete(client, prompt="t t t", max_tokens=10 ** 6)       # greedy never ends this one by itself
    assert r["choices"][0]["finish_reason"] == "length" and r["usage"]["total_tokens"] == model.n_ctx


def test_token_id_prompt_equals_text_prompt(client, model):
    ids = model.tokenize("the the", special=True)
    assert complete(client, prompt=ids, max_tokens=6)["choices"] == complete(client, max_tokens=6)["choices"]


def test_same_seed_same_sample(client):
    first, second, other = (complete(client, max_tokens=12, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=s)
                            for s in (7, 7, 8))
    assert first["choices"] == second["choices"]
    assert first["choices"] != other["choices"]


def test_follow_up_chat_reuses_the_cache(client):
    first = chat(client, max_tokens=6)
    messages = HELLO + [first["choices"][0]["message"], {"role": "user", "content": "and again"}]
    second = chat(client, messages, max_tokens=6)
    # the first turn's prompt comes from the cache (a random model's answer may not re-tokenize to the same ids)
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= first["usage"]["prompt_tokens"]


def test_concurrent_requests_run_one_at_a_time(client):
    # long enough to overlap: with the model thread's serialization removed this fails
    prompts = ["the the", "he he the", "t t t"]
    alone = [complete(client, prompt=p, max_tokens=60)["choices"][0]["text"] for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: complete(client, prompt=p, max_tokens=60)["choices"][0]["text"],
                                 prompts * 2))
    assert together == alone * 2


def test_leaving_a_stream_early_stops_its_generation(tiny):
    model = Model(tiny, n_threads=1)
    produced = []
    generate_tokens = model.generate_tokens

    def counting(*args, **kwargs):
        for token in generate_tokens(*args, **kwargs):
            produced.append(token)
            time.sleep(0.002)         # slow enough that leaving after the first piece is early
            yield token
    model.generate_tokens = counting
    worker = ModelThread(model)
    body = {"prompt": "t t t", "max_tokens": 200, "temperature": 0}      # greedy runs all 200 tokens

    async def read_one_piece_then_leave():
        events = worker.run(make_job(COMPLETIONS, body, completion_prompt(model, body), model.n_ctx,
                                     SamplerSettings()))
        assert isinstance(await anext(events), Piece)
        await events.aclose()
        produced.clear()
        # jobs run in order: once the next one is done, the first has ended
        events = worker.run(make_job(COMPLETIONS, {**body, "max_tokens": 1}, [1, 2], model.n_ctx, SamplerSettings()))
        return [event async for event in events]

    *_, finish = asyncio.run(read_one_piece_then_leave())
    assert isinstance(finish, Finish) and finish.stats.generated_tokens == 1
    assert len(produced) < 50        # the left job stopped at once, not after its 200 tokens


def slowed(model, produced, seconds=0.01):
    """model with each generated token recorded in produced and taking at least seconds: a long answer stays long."""
    generate_tokens = model.generate_tokens

    def slow(*args, **kwargs):
        for token in generate_tokens(*args, **kwargs):
            produced.append(token)
            time.sleep(seconds)
            yield token
    model.generate_tokens = slow
    return model


@pytest.fixture
def live_server(tiny):
    """qrun serve's app under uvicorn in a thread, on a free port, over a model whose tokens take 10 ms each."""
    import uvicorn
    produced = []
    model = Model(tiny, n_threads=1, n_ctx=4096)
    model.generate("t t t", max_tokens=2)          # compiled before the clock of a test starts
    slowed(model, produced)
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(build_app(model), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield sock.getsockname()[1], produced
    server.should_exit = True
    thread.join(10)


def _post_then_drop(port, body, after):
    """Send a request by hand and close the connection after `after` seconds, unanswered."""
    data = json.dumps(body).encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
        time.sleep(after)


@pytest.mark.parametrize("stream", [False, True])
def test_a_dropped_client_is_cancelled_at_the_next_token(live_server, stream):
    port, produced = live_server
    # greedy runs all 2000 tokens: 20 s at 10 ms a token if the dropped request were not cancelled
    _post_then_drop(port, {"prompt": "t t t", "max_tokens": 2000, "temperature": 0, "stream": stream}, after=0.5)
    dropped_at = len(produced)
    assert 0 < dropped_at < 2000
    started = time.monotonic()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", method="POST",
                                     headers={"Content-Type": "application/json"},
                                     data=json.dumps({"prompt": "the the", "max_tokens": 1}).encode())
    with urllib.request.urlopen(request, timeout=60) as r:
        assert json.loads(r.read())["usage"]["completion_tokens"] == 1
    # the next request ran after at most a few of the dropped one's tokens (each 10 ms), not its 1,500 left
    assert time.monotonic() - started < 1.0
    assert len(produced) - dropped_at <= 1 + 5


@pytest.mark.parametrize("field, value", [
    ("presence_penalty", 0.5),
    ("frequency_penalty", 1), ("logit_bias", {"50": 10}), ("typical_p", 0.9)])
def test_an_unimplemented_field_is_a_400_naming_it(client, field, value):
    for path, body in [("/v1/chat/completions", {"messages": HELLO}), ("/v1/completions", {"prompt": "x"})]:
        r = client.post(path, json={**body, field: value})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == field and error["code"] == "unsupported_parameter"
        assert f"'{field}' is not supported" in error["message"]


def test_an_unimplemented_field_that_asks_for_nothing_is_accepted(client):
    # what client libraries send by default
    neutral = {"response_format": {"type": "text"}, "tools": [], "logprobs": False, "presence_penalty": 0,
               "frequency_penalty": 0.0, "logit_bias": {}, "top_logprobs": None, "user": "me", "store": False}
    assert chat(client, max_tokens=2, **neutral)["usage"]["completion_tokens"] <= 2


def test_a_stopping_server_refuses_waiting_requests_with_a_503(model):
    app = build_app(model)
    app.state.model_thread.stop()
    with TestClient(app) as c:
        r = c.post("/v1/completions", json={"prompt": "the the", "max_tokens": 4})
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"


def test_a_failure_in_the_model_is_a_500_or_a_last_error_event(model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("kernel on fire")
        yield
    monkeypatch.setattr(model, "generate_tokens", broken)
    with TestClient(build_app(model), raise_server_exceptions=False) as c:
        r = c.post("/v1/completions", json={"prompt": "the the"})
        assert r.status_code == 500 and "kernel on fire" in r.json()["error"]["message"]
        r = c.post("/v1/completions", json={"prompt": "the the", "stream": True})
    assert r.status_code == 200
    last = json.loads(r.text.strip().split("\n\n")[-1][len("data: "):])
    assert last["error"]["type"] == "server_error" and "kernel on fire" in last["error"]["message"]


@pytest.mark.parametrize("path, body, needle", [
    ("/v1/completions", b"{", "not valid JSON"),
    ("/v1/completions", b"\xff\xfe", "not valid JSON"),
    ("/v1/completions", b"[1, 2]", "JSON object"),
    ("/v1/completions", {}, "'prompt' is required"),
    ("/v1/completions", {"prompt": 5}, "'prompt' must be"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "'prompt' must be"),
    ("/v1/completions", {"prompt": [1, 10 ** 9]}, "outside the vocabulary"),
    ("/v1/completions", {"prompt": ""}, "empty"),
    ("/v1/completions", {"prompt": "x", "n": 2}, "n=1"),
    ("/v1/completions", {"prompt": "x", "max_tokens": "ten"}, "'max_tokens' must be an integer"),
    ("/v1/completions", {"prompt": "x", "max_tokens": -1}, "'max_tokens' must be >= 0"),
    ("/v1/completions", {"prompt": "x", "temperature": "hot"}, "'temperature' must be a number"),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, "temperature must be >= 0"),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, "top_p"),
    ("/v1/completions", {"prompt": "x", "top_k": 1.5}, "'top_k' must be an integer"),
    ("/v1/completions", {"prompt": "x", "seed": True}, "'seed' must be an integer"),
    ("/v1/completions", {"prompt": "x", "stop": 3}, "'stop'"),
    ("/v1/completions", {"prompt": "x", "stream": "yes"}, "'stream' must be a boolean"),
    ("/v1/chat/completions", {}, "'messages'"),
    ("/v1/chat/completions", {"messages": []}, "'messages'"),
    ("/v1/chat/completions", {"messages": "hi"}, "'messages'"),
    ("/v1/chat/completions", {"messages": [{"content": "hi"}]}, "messages[0]"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "text parts"),
    ("/v1/chat/completions", {"messages": HELLO, "max_completion_tokens": 1.5}, "'max_completion_tokens'"),
    # JSON may escape a lone surrogate, which no UTF-8 text holds
    ("/v1/completions", b'{"prompt": "\\ud800 hi"}', "not valid UTF-8"),
    ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\udcff hi"}]}', "not valid UTF-8"),
])
def test_bad_request_is_a_400_with_an_openai_error(client, path, body, needle):
    r = client.post(path, content=body) if isinstance(body, bytes) else client.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and needle in error["message"], error


def test_prompt_longer_than_the_context_is_a_400(client, model):
    r = client.post("/v1/completions", json={"prompt": "the" + " the" * model.n_ctx, "stream": True})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and str(model.n_ctx) in error["message"]
    r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "the " * model.n_ctx}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_text_parts_are_joined(client):
    parts = [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]
    assert chat(client, [{"role": "user", "content": parts}], max_tokens=5)["choices"] == \
        chat(client, max_tokens=5)["choices"]


def test_unknown_path_and_wrong_method_are_json_errors(client):
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()


@pytest.mark.realmodel
def test_smollm2_greedy_chat_equals_model_chat_and_next_turn_is_cached(smollm2_path):
    model = Model(smollm2_path, n_ctx=512)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    with TestClient(build_app(model)) as c:
        first = c.post("/v1/chat/completions", json={"model": "smollm2", "messages": messages, "max_tokens": 24,
                                                     "temperature": 0}).json()
        answer = first["choices"][0]["message"]["content"]
        follow_up = messages + [{"role": "assistant", "content": answer}, {"role": "user", "content": "And of Italy?"}]
        second = c.post("/v1/chat/completions", json={"messages": follow_up, "max_tokens": 4, "temperature": 0}).json()
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > first["usage"]["prompt_tokens"]
    model.reset()
    assert answer.strip() and answer == model.chat(messages, max_tokens=24, temperature=0)


# -- the command -------------------------------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# started in the background by a non-interactive shell (as CI may run it), a process begins with SIGINT ignored
@pytest.mark.parametrize("sigint_ignored", [False, True])
def test_qrun_serve_process_answers_then_stops(tiny, tmp_path, sigint_ignored):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "kvant.runtime.cli", "serve", tiny, "--port", str(port),
                               "-t", "1", "-c", "128", "--temp", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "KVANT_CACHE": str(tmp_path)},
                              preexec_fn=_ignore_sigint if sigint_ignored else None)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "qrun serve did not come up"
                time.sleep(0.2)
        request = urllib.request.Request(f"{base}/v1/chat/completions", method="POST",
                                         headers={"Content-Type": "application/json"},
                                         data=json.dumps({"messages": HELLO, "max_tokens": 4}).encode())
        with urllib.request.urlopen(request, timeout=60) as r:
            answer = json.loads(r.read())
        assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] <= 4
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert "Traceback" not in err and "qrun serve: stopped" in err, err


def test_serve_port_in_use_is_one_line_error(capsys, tiny):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["serve", tiny, "--port", str(port)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("qrun: error: cannot listen on"), err
    assert str(port) in lines[0]


def test_serve_bad_model_file_is_one_line_error(capsys, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    code = main(["serve", str(bad), "--port", "0"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("qrun: error: "), err


def _log_softmax(logits):
    z = np.asarray(logits, np.float64)
    return z - z.max() - np.log(np.exp(z - z.max()).sum())


def _greedy_reference(model, prompt, n):
    """Greedy decoding of n tokens by the API, each step's log-softmax of the model's own logits beside it (a fresh
    evaluation of each prefix)."""
    tokens, steps = [], []
    for _ in range(n):
        model.reset()
        steps.append(_log_softmax(model.eval(prompt + tokens)))
        tokens.append(int(steps[-1].argmax()))
    model.reset()
    return tokens, steps


def test_chat_logprobs_are_the_log_softmax_of_the_logits(client, model):
    from kvant.runtime.server import chat_prompt
    body = {"messages": HELLO, "max_tokens": 5, "temperature": 0, "logprobs": True, "top_logprobs": 3}
    r = chat(client, **{k: v for k, v in body.items() if k != "messages"})
    content = r["choices"][0]["logprobs"]["content"]
    assert len(content) == r["usage"]["completion_tokens"] and content
    tokens, steps = _greedy_reference(model, chat_prompt(model, body), len(content))
    for c, ref, token in zip(content, steps, tokens):
        assert bytes(c["bytes"]) == model.tokenizer.token_bytes(token, special=False)
        assert abs(c["logprob"] - ref[token]) < 1e-3
        tops = c["top_logprobs"]
        assert len(tops) == 3 and tops[0]["logprob"] == c["logprob"] >= tops[1]["logprob"] >= tops[2]["logprob"]
        assert tops[1]["logprob"] == pytest.approx(np.sort(ref)[-2], abs=1e-3)
    assert "".join(c["token"] for c in content) == r["choices"][0]["message"]["content"]


def test_completion_logprobs_stream_and_whole_agree(client):
    body = {"max_tokens": 4, "temperature": 0, "logprobs": 2}
    whole = complete(client, **body)["choices"][0]
    lp = whole["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"])
    assert "".join(lp["tokens"]) == whole["text"] and lp["text_offset"][0] == 0
    assert all(len(t) == 2 for t in lp["top_logprobs"])
    chunks = [e for e in events(client.post("/v1/completions", json={"prompt": "the the", **body, "stream": True}))
              if e.get("choices")]
    streamed = [x for c in chunks if c["choices"][0]["logprobs"] for x in c["choices"][0]["logprobs"]["token_logprobs"]]
    assert streamed == pytest.approx(lp["token_logprobs"])


@pytest.mark.parametrize("path, body, field", [
    ("/v1/chat/completions", {"messages": HELLO, "top_logprobs": 2}, "top_logprobs"),
    ("/v1/chat/completions", {"messages": HELLO, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("/v1/completions", {"prompt": "x", "logprobs": -1}, "logprobs"),
    ("/v1/completions", {"prompt": "x", "logprobs": True}, "logprobs")])
def test_bad_logprobs_requests_are_a_400(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == field


def test_embeddings_endpoint(client, model):
    import base64
    want = model.embed(["hello there", "the the the"])
    r = client.post("/v1/embeddings", json={"input": ["hello there", "the the the"], "model": "x"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and [d["index"] for d in body["data"]] == [0, 1]
    assert np.allclose([d["embedding"] for d in body["data"]], want, atol=1e-6)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    one = client.post("/v1/embeddings", json={"input": "hello there", "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(one["data"][0]["embedding"]), "<f4")
    assert np.allclose(vector, want[0], atol=1e-6)
    ids = model.tokenize("hello there")
    by_ids = client.post("/v1/embeddings", json={"input": ids}).json()
    assert np.allclose(by_ids["data"][0]["embedding"], want[0], atol=1e-6)


@pytest.mark.parametrize("body, field", [
    ({}, "input"), ({"input": []}, "input"), ({"input": [[]]}, "input"), ({"input": [1.5]}, "input"),
    ({"input": [10 ** 9]}, "input"), ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "x", "dimensions": 3}, "dimensions")])
def test_bad_embeddings_requests_are_a_400(client, body, field):
    r = client.post("/v1/embeddings", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == field
    assert client.get("/health").status_code == 200         # and the server goes on


CHOICE_SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "n": {"type": "integer",
                 "minimum": 0, "maximum": 9}}, "required": ["answer", "n"], "additionalProperties": False}


@pytest.mark.parametrize("field, value", [
    ("response_format", {"type": "json_schema", "json_schema": {"name": "c", "schema": CHOICE_SCHEMA}}),
    ("json_schema", CHOICE_SCHEMA)])
def test_structured_output_follows_the_schema(client, field, value):
    for seed in range(3):
        r = chat(client, max_tokens=60, temperature=1.0, seed=seed, **{field: value})
        got = json.loads(r["choices"][0]["message"]["content"])
        assert got["answer"] in ("yes", "no") and 0 <= got["n"] <= 9 and set(got) == {"answer", "n"}
        assert r["choices"][0]["finish_reason"] == "stop"


def test_json_object_and_grammar(client):
    r = complete(client, max_tokens=40, temperature=1.0, seed=1, response_format={"type": "json_object"},
                 prompt="data:")
    text = r["choices"][0]["text"]
    if r["choices"][0]["finish_reason"] == "stop":      # (a random model may write a long object)
        assert isinstance(json.loads(text), dict)
    else:
        assert text.lstrip().startswith("{")
    r = complete(client, max_tokens=8, temperature=1.0, seed=2, grammar='root ::= "yes" | "no"')
    assert r["choices"][0]["text"] in ("yes", "no")
    with_stream = [e for e in events(client.post("/v1/completions", json={
        "prompt": "x", "max_tokens": 8, "temperature": 1.0, "seed": 2, "grammar": 'root ::= "yes" | "no"',
        "stream": True}))]
    assert "".join(e["choices"][0]["text"] for e in with_stream if e.get("choices")) in ("yes", "no")


@pytest.mark.parametrize("body, field, needle", [
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}}}, "response_format",
     "objekt"),
    ({"json_schema": {"type": "string", "pattern": "(?=a)b"}}, "json_schema", "look-around"),
    ({"grammar": 'root ::= "unterminated'}, "grammar", ""),
    ({"response_format": {"type": "xml"}}, "response_format", "json_object"),
    ({"grammar": "root ::= x", "json_schema": {}}, "grammar", "give one of")])
def test_bad_schema_or_grammar_is_a_400_naming_it(client, body, field, needle):
    r = client.post("/v1/chat/completions", json={"messages": HELLO, **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and needle in error["message"] and "\n" not in error["message"]
    assert chat(client, max_tokens=1)["usage"]["completion_tokens"] == 1      # the server goes on


def test_embeddings_without_pooling_are_a_400(model):
    with TestClient(build_app(model, pooling="none")) as c:
        r = c.post("/v1/embeddings", json={"input": "hello"})
    assert r.status_code == 400 and "--pooling" in r.json()["error"]["message"]
