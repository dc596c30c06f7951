"""The Python API at its edges, on a tiny random model: what it refuses (with a clear exception) and how it ends a
generation (stop strings, the end of the context, a character cut in the middle)."""
import pytest

from kvant.runtime import Model
from kvant.runtime.sampling import NonFiniteLogitsError, Sampler, SamplerSettings
from kvant.runtime.textstream import TextStream


@pytest.fixture(scope="module")
def model(tiny):
    with Model(tiny, n_threads=1, n_ctx=64) as m:
        yield m


def test_generation_stops_at_the_end_of_the_context(tiny):
    with Model(tiny, n_threads=1, n_ctx=16) as m:
        m.stop_ids = frozenset()            # a random model may sample its end-of-generation token: not here
        prompt = m.tokenize("the the the")
        ids = list(m.generate_tokens(prompt, max_tokens=100, sampler=Sampler(SamplerSettings(temperature=0))))
        assert m.stats.context_full and len(prompt) + len(ids) == 16 + 1     # the last one is never stepped


def test_room_left_is_not_context_full(model):
    list(model.generate("the the", max_tokens=3, temperature=0, stream=True))
    assert not model.stats.context_full


def test_a_str_stop_is_one_stop_string():
    stream = TextStream(stop="ab")
    assert stream.feed(b"a b ") == "a b "          # the letters alone do not stop
    assert stream.feed(b"xab") == "x" and stream.stopped


def test_a_character_cut_at_the_end_is_dropped_not_replaced():
    stream = TextStream()
    assert stream.feed("дед".encode()[:-1]) == "де"    # half of the last "д" held
    assert stream.flush() == ""


@pytest.mark.parametrize("text, error", [(None, TypeError), (b"hi", TypeError), ("\udcff hi", ValueError)])
def test_tokenize_refuses_what_is_not_utf8_text(model, text, error):
    with pytest.raises(error):
        model.tokenize(text)


@pytest.mark.parametrize("call", [
    lambda m: m.eval([-5]),
    lambda m: m.eval([10 ** 6]),
    lambda m: m.chat([]),
    lambda m: m.chat([{"role": "user", "content": None}]),
    lambda m: m.perplexity("the " * 200, n_ctx=2),
])
def test_bad_arguments_raise_value_error(model, call):
    with pytest.raises(ValueError):
        call(model)


@pytest.mark.parametrize("kwargs", [dict(n_ctx=-5), dict(n_ctx=0), dict(n_batch=0)])
def test_bad_model_options_raise_value_error(tiny, kwargs):
    with pytest.raises(ValueError):
        Model(tiny, **kwargs)


def test_detokenize_renders_control_tokens_only_when_asked(model):
    ids = [model.tokenizer.bos_id] + model.tokenize("the", add_bos=False)
    assert model.detokenize(ids) == model.detokenize(ids[1:])
    assert model.detokenize(ids, special=True).startswith(model.tokenizer.token_bytes(ids[0]).decode())


def test_seed_minus_one_is_random_as_in_llamacpp():
    assert SamplerSettings(seed=-1).seed is None


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_nan_logits_are_an_error_not_a_token(temperature):
    import numpy as np
    logits = np.zeros(10, np.float32)
    logits[3] = np.nan
    with pytest.raises(NonFiniteLogitsError):
        Sampler(SamplerSettings(temperature=temperature, seed=0))(logits)


@pytest.mark.parametrize("prompt", ["the the", "the the the the the the the the the the"])
@pytest.mark.parametrize("weight_type", ["Q8_0", "Q4_0", "F32"])
@pytest.mark.parametrize("tensor", ["blk.0.attn_q.weight", "blk.0.ffn_gate.weight", "blk.1.ffn_down.weight"])
def test_a_nan_weight_reaches_the_samplers_check(tmp_path, weight_type, tensor, prompt):
    """A NaN in a weight (a block's scale, or a float) must come out as NaN logits, which the sampler refuses,
    through every later layer: the activations of the next matrix are quantized to int8 on an integer kernel path,
    where a NaN would otherwise turn into some code. A short prompt runs as matvecs, a long one through the prefill
    GEMMs."""
    import numpy as np
    from gguf import GGUFReader
    from tiny_model import patch, write_tiny_model
    path = write_tiny_model(tmp_path / "nan.gguf", weight_type=weight_type)
    info = next(t for t in GGUFReader(str(path)).tensors if t.name == tensor)
    nan = np.float32(np.nan).tobytes() if weight_type == "F32" else np.float16(np.nan).tobytes()
    patch(path, int(info.data_offset), nan)
    with Model(str(path), n_threads=1, n_ctx=32) as m:
        with pytest.raises(NonFiniteLogitsError):
            list(m.generate_tokens(m.tokenize(prompt), max_tokens=2, sampler=Sampler(SamplerSettings(temperature=0))))


def test_generate_logprobs_are_the_log_softmax_of_the_logits(model):
    import numpy as np
    model.reset()
    model.generate("hello there", max_tokens=4, temperature=0, logprobs=2)
    records = model.logprobs
    assert len(records) == model.stats.generated_tokens > 0
    prompt = model.tokenize("hello there", special=True)
    for i, r in enumerate(records):
        model.reset()
        z = model.eval(prompt + [x.token for x in records[:i]]).astype(np.float64)
        ref = z - z.max() - np.log(np.exp(z - z.max()).sum())
        assert r.token == int(ref.argmax()) and abs(r.logprob - ref[r.token]) < 1e-3
        assert [t for t, _ in r.top] == list(np.argsort(-ref, kind="stable")[:2]) and r.top[0][1] == r.logprob
    model.reset()
    model.generate("hello there", max_tokens=2, temperature=0)
    assert model.logprobs == []         # not asked for: none kept


@pytest.mark.parametrize("bad", [-1, 21, True, 1.5])
def test_bad_logprobs_is_refused_at_the_call(model, bad):
    with pytest.raises(ValueError, match="logprobs must be an integer from 0 to 20"):
        model.generate("x", max_tokens=1, logprobs=bad)


def test_embed_pools_the_final_norms_output(model):
    import numpy as np
    tokens = model.tokenize("hello there", add_bos=None)
    model.reset()
    states = []             # the last layer's output, normed here by numpy (RMSNorm with the output norm's weights)
    model.transformer.forward(tokens, 0, model.cache, states=states)
    x = states[-1].astype(np.float64)
    hidden = x / np.sqrt((x * x).mean(1, keepdims=True) + model.config.rms_eps) * model.transformer.output_norm
    for pooling, want in [("mean", hidden.mean(0)), ("last", hidden[-1]), ("cls", hidden[0])]:
        got = model.embed("hello there", pooling=pooling)
        assert np.allclose(got, want / np.linalg.norm(want), atol=1e-5)
        assert np.allclose(model.embed("hello there", pooling=pooling, normalize=False), want, rtol=1e-4, atol=1e-5)
    per_token = model.embed(["hello there"], pooling="none")[0]
    assert per_token.shape == hidden.shape
    batch = model.embed(["hello there", "the the"])
    assert batch.shape == (2, hidden.shape[1]) and np.allclose(batch[0], model.embed("hello there"))
    assert model._tokens == []          # the cache is left empty


@pytest.mark.parametrize("args, match", [
    (([],), "no input"), (("x",), None), ((["x", 3.5],), "string or a list of token ids"),
    (("x", "max"), "unknown pooling 'max'")])
def test_bad_embedding_input(model, args, match):
    if match is None:               # one long input: more tokens than the context holds
        args = ("word " * (model.n_ctx + 10),)
        match = "does not fit in n_ctx"
    with pytest.raises(ValueError, match=match):
        model.embed(*args)
