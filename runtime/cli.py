"""qrun: run GGUF models on the CPU. Subcommands dispatch to kvant.runtime's API; flags follow llama.cpp."""
import contextlib
import functools
import json
import os
import sys
import time

import click

from kvant.runtime.model_cache import DEFAULT_MODEL, KNOWN_MODELS

MODEL_HELP = f"a GGUF file, or a known model name ({', '.join(sorted(KNOWN_MODELS))}), fetched once"


def model_options(f):
    """MODEL as an argument or -m (llama.cpp's flag); the command gets one `model`, the default if neither."""
    @functools.wraps(f)
    def with_model(*args, model=None, model_opt=None, **kw):
        if model is not None and model_opt is not None and os.path.realpath(model) != os.path.realpath(model_opt):
            raise click.UsageError(f"two models given ({model!r} and -m {model_opt!r}): give one")
        return f(*args, model=model if model is not None else model_opt, **kw)
    with_model = click.option("-m", "--model", "model_opt", default=None, help=MODEL_HELP)(with_model)
    return click.argument("model", required=False, default=None)(with_model)


def sampling_options(f):
    """llama.cpp's sampling flags and defaults."""
    for decorator in reversed([
        click.option("--temp", "temperature", type=float, default=0.8, show_default=True, help="0 = greedy"),
        click.option("--top-k", type=int, default=40, show_default=True),
        click.option("--top-p", type=float, default=0.95, show_default=True),
        click.option("--min-p", type=float, default=0.05, show_default=True),
        click.option("--repeat-penalty", type=float, default=1.0, show_default=True),
        click.option("--seed", type=int, default=None, help="random seed (default or -1: random)"),
    ]):
        f = decorator(f)
    return f


def runtime_options(f):
    for decorator in reversed([
        click.option("-t", "--threads", type=click.IntRange(min=1), default=None,
                     help="threads (default: physical cores)"),
        click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=8), default=None,
                     help="context size in tokens (default: 4096 or the model's, if smaller)"),
        click.option("--kv-type", type=click.Choice(["f16", "f32"]), default="f16", show_default=True,
                     help="KV cache storage (llama.cpp's -ctk/-ctv)"),
    ]):
        f = decorator(f)
    return f


def _sampling(kw):
    """The sampling flags, checked before any model is loaded."""
    from kvant.runtime.sampling import SamplerSettings
    settings = {k: kw.pop(k) for k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed")}
    SamplerSettings(**settings)
    return settings


def _load(model, threads=None, n_ctx=None, kv_type="f16", compile_ahead=False, chat_template=None):
    from kvant.runtime import compile_notice
    from kvant.runtime.api import Model
    m = Model(model, n_ctx=n_ctx, n_threads=threads, kv_type=kv_type, before_weights=compile_notice.announce,
              compile_ahead=compile_ahead, chat_template=chat_template)
    if m.template_note:
        click.echo(f"qrun: {m.template_note}", err=True)
    return m


def _read_template(path):
    """The text of a --chat-template file (None: the model file's own)."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        raise click.BadParameter(f"{path} is not UTF-8 text", param_hint="--chat-template") from None


chat_template_option = click.option(
    "--chat-template", "chat_template", type=click.Path(exists=True, dir_okay=False), default=None,
    help="a Jinja chat template file to use instead of the model file's (llama.cpp's --chat-template-file)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def qrun():
    """Run GGUF language models on the CPU."""


@qrun.command()
@model_options
@click.option("-p", "--prompt", required=True, help="the text to continue")
@click.option("-n", "--n-predict", "max_tokens", type=click.IntRange(min=0), default=128, show_default=True)
@click.option("--stop", multiple=True, help="stop at this string (repeatable)")
@click.option("--stats", is_flag=True, help="afterwards print token counts, times and speed on stderr")
@click.option("--ignore-eos", is_flag=True, help="go on past end-of-generation tokens (llama.cpp's flag)")
@sampling_options
@runtime_options
def generate(model, prompt, max_tokens, stop, stats, ignore_eos, threads, n_ctx, kv_type, **kw):
    """Continue PROMPT; prints only the generated text."""
    sampling = _sampling(kw)
    m = _load(model, threads, n_ctx, kv_type, compile_ahead=True)
    for piece in m.generate(prompt, max_tokens, stop=stop, stream=True, ignore_eos=ignore_eos, **sampling):
        sys.stdout.write(piece)
        sys.stdout.flush()
    if sys.stdout.isatty():         # end the line for the shell's prompt; a pipe or file gets the text alone
        sys.stdout.write("\n")
        sys.stdout.flush()
    if stats:
        click.echo(_stats_line(m.stats), err=True)
    if m.stats.context_full:
        click.echo(f"qrun: stopped at the end of the context (n_ctx={m.n_ctx}; -c raises it)", err=True)


@qrun.command()
@model_options
@click.option("-s", "--system", default=None, help="system prompt")
@click.option("-n", "--n-predict", "max_tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--stats", is_flag=True, help="after each answer print token counts and speed on stderr")
@click.option("--ignore-eos", is_flag=True, help="go on past end-of-generation tokens (llama.cpp's flag)")
@chat_template_option
@sampling_options
@runtime_options
def chat(model, system, max_tokens, stats, ignore_eos, chat_template, threads, n_ctx, kv_type, **kw):
    """Chat with a model (default: smollm2). /exit or Ctrl-D ends the chat."""
    sampling = _sampling(kw)
    m = _load(model, threads, n_ctx, kv_type, compile_ahead=True, chat_template=_read_template(chat_template))
    interactive = sys.stdin.isatty()
    if hasattr(sys.stdin, "reconfigure"):       # bytes that are not UTF-8 reach the check that names them
        sys.stdin.reconfigure(errors="surrogateescape")
    messages = [{"role": "system", "content": system}] if system else []
    if interactive:
        click.echo("kvant chat: type a message; /exit or Ctrl-D ends.", err=True)
    while True:
        line = _read_line(interactive)
        if line is None:
            break
        text = line.rstrip("\n")
        if text.strip() in ("/exit", "/quit"):
            break
        if not text.strip():
            continue
        messages.append({"role": "user", "content": text})
        answer, pieces = [], None
        try:
            pieces = m.chat(messages, max_tokens, stream=True, ignore_eos=ignore_eos, **sampling)
            for piece in pieces:
                answer.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
        except ValueError as e:     # this message cannot be sent (not UTF-8, refused by the template): the chat goes on
            messages.pop()
            click.echo(f"qrun: {e}", err=True)
            continue
        except KeyboardInterrupt:   # Ctrl-C stops this answer, as llama-cli and ollama do; the chat goes on with it
            if pieces is not None:
                pieces.close()
            click.echo(" [interrupted]", err=True, nl=False)
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": "".join(answer)})
        if stats:
            click.echo(_stats_line(m.stats), err=True)
        if m.stats.context_full:
            from kvant.runtime.model import ContextFullError
            raise ContextFullError(f"context full: the answer was cut at n_ctx={m.n_ctx} tokens (start a new chat "
                                   f"or raise -c)")


@qrun.command()
@model_options
@click.option("-f", "--file", "text_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="the text (not with --kl-divergence: the base file holds the tokens)")
@click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=8), default=512, show_default=True)
@click.option("--chunks", type=click.IntRange(min=0), default=0, help="chunks to score (0 = all)")
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None)
@click.option("--kl-divergence-base", "kl_base", type=click.Path(dir_okay=False), default=None,
              help="write the log-probabilities to this file (llama-perplexity's format); with --kl-divergence, "
                   "read them")
@click.option("--kl-divergence", "kl_divergence", is_flag=True,
              help="KL divergence from the base file's model, on its tokens")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def perplexity(model, text_file, n_ctx, chunks, threads, kl_base, kl_divergence, as_json):
    """Perplexity of a text file, by llama-perplexity's method; or its KL divergence from a base model's."""
    if kl_divergence:
        return _kl_divergence(model, kl_base, threads, as_json)
    if text_file is None:
        raise click.UsageError("missing option '-f' / '--file'")
    m = _load(model, threads, n_ctx)
    text = _read_text(text_file)

    from kvant.runtime.progress import step_progress
    t0 = time.perf_counter()
    with step_progress(None, "perplexity", "chunk") as advance, _whole_file(kl_base) as base:
        r = m.perplexity(text, n_ctx=n_ctx, n_chunks=chunks or None, kl_base=base,
                         progress=lambda done, total, ppl: advance(total, ppl=f"{ppl:.4f}"))
    seconds = time.perf_counter() - t0
    if as_json:
        click.echo(json.dumps({"ppl": r.ppl, "nll": r.nll, "n_chunks": r.n_chunks, "n_ctx": r.n_ctx,
                               "n_tokens_scored": r.n_tokens_scored, "chunk_ppl": r.chunk_ppl,
                               "seconds": seconds}))
    else:       # llama-perplexity's lines: the running estimate after each chunk, then the final one
        click.echo(",".join(f"[{i}]{ppl:.4f}" for i, ppl in enumerate(r.chunk_ppl, 1)) + ",")
        click.echo(f"Final estimate: PPL = {r.ppl:.4f}")


@contextlib.contextmanager
def _whole_file(path):
    """A binary file written under a temporary name beside path (qconv's writers' temp_beside) and renamed to path
    only when complete (None: no file)."""
    if path is None:
        yield None
        return
    from kvant.convert.gguf_writer import public_mode, temp_beside
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        public_mode(tmp)
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _kl_divergence(model, kl_base, threads, as_json):
    if kl_base is None:
        raise click.UsageError("--kl-divergence needs --kl-divergence-base FILE (the base model's log-probabilities)")
    if not os.path.isfile(kl_base):
        raise click.UsageError(f"--kl-divergence-base {kl_base}: no such file")
    from kvant.runtime import kld
    from kvant.runtime.progress import step_progress
    with open(kl_base, "rb") as base:
        m = _load(model, threads, kld.peek_n_ctx(base))
        with step_progress(None, "KL divergence", "chunk") as advance:
            stats = m.kl_divergence(base, progress=lambda done, total, ppl: advance(total, ppl=f"{ppl:.4f}"))
    if stats.count < 100:
        raise kld.KLDivergenceFileError(f"only {stats.count} scored tokens: too few for the statistics")
    summary = stats.summary()
    click.echo(json.dumps(summary) if as_json else "\n".join(kld.summary_lines(summary)))


@qrun.command()
@model_options
@click.option("-f", "--file", "text_file", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("-p", "--prompt", default=None, help="text to tokenize (instead of -f)")
@click.option("--ids", is_flag=True, help="print the ids as one JSON list")
@click.option("--add-bos", is_flag=True, help="prepend BOS where the model uses one")
@click.option("--special", is_flag=True, help="parse special-token text such as <|im_start|>")
def tokenize(model, text_file, prompt, ids, add_bos, special):
    """Token ids of a text (no BOS unless asked)."""
    if (text_file is None) == (prompt is None):
        raise click.UsageError("give exactly one of -f FILE or -p TEXT")
    from kvant.runtime.api import load_tokenizer
    tok = load_tokenizer(model)
    text = _read_text(text_file) if text_file else prompt
    out = tok.encode(text, add_special=False, parse_special=special)
    if add_bos and tok.add_bos:
        out = [tok.bos_id] + out
    if ids:
        click.echo(json.dumps(out))
    else:
        for i in out:
            click.echo(f"{i:6d} -> '{_printable(tok.token_bytes(i))}'")


def _printable(piece: bytes) -> str:
    """A token's bytes as text (Cyrillic as Cyrillic), escaped only where not printable: control characters as \\n,
    \\x01, bytes that are not UTF-8 on their own (part of a character) as \\xd0."""
    text = piece.decode("utf-8", errors="backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _int_list(ctx, param, value):
    """llama-bench's comma-separated values: "128,512" -> (128, 512), each >= 1."""
    try:
        out = tuple(int(v) for v in str(value).split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if min(out) < 1:
        raise click.BadParameter(f"{value!r}: every value must be >= 1")
    return out


@qrun.command()
@model_options
@click.option("-p", "--n-prompt", default="128", show_default=True, callback=_int_list,
              help="prompt lengths, comma-separated (one prompt-processing test each)")
@click.option("-n", "--n-gen", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("-r", "--repetitions", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("-d", "--n-depth", "depth", type=click.IntRange(min=0), default=0, show_default=True,
              help="tokens already in the cache before each test (llama-bench's -d)")
@click.option("-t", "--threads", type=click.IntRange(min=1), default=None)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def bench(model, n_prompt, n_gen, repetitions, depth, threads, as_json):
    """Prompt processing and generation speed, as llama-bench measures them (random tokens, a warm-up run first)."""
    from kvant.runtime.bench import run_bench
    m = _load(model, threads, depth + max(n_prompt) + n_gen + 8)
    result = run_bench(m, n_prompt, n_gen, repetitions, depth=depth)
    if as_json:
        click.echo(json.dumps(result))
    else:
        at = f" @ d{depth}" if depth else ""
        click.echo(f"model {result['model']}  threads {result['threads']}  load {result['load_s']:.2f} s")
        click.echo(f"cpu {result['cpu']}  kernel path {result['kernel_path']}  ({' '.join(result['features'])})")
        pp = "   ".join(f"pp{n}{at}: {v:.1f} tok/s" for n, v in result["pp_tok_s"].items())
        click.echo(f"{pp}   tg{n_gen}{at}: {result['tg_tok_s']:.1f} tok/s ({result['tg_gb_s']:.1f} GB/s of "
                   f"weights)   RSS {result['rss_mb']:.0f} MB")


@qrun.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--alias", default=None, help="the model id the API answers with (default: the file's name)")
@chat_template_option
@click.option("--pooling", type=click.Choice(["mean", "cls", "last", "none"]), default=None,
              help="how /v1/embeddings pools tokens (default: the file's pooling type, else mean)")
@sampling_options
@runtime_options
def serve(model, host, port, alias, chat_template, pooling, threads, n_ctx, kv_type, **kw):
    """An OpenAI-compatible HTTP server: /v1/chat/completions, /v1/completions, /v1/models, /health.
    The sampling flags are the defaults for requests that leave them out."""
    from kvant.runtime import server
    from kvant.runtime.sampling import SamplerSettings
    defaults = SamplerSettings(**_sampling(kw))
    template = _read_template(chat_template)
    sock = server.listen(host, port)
    m = _load(model, threads, n_ctx, kv_type, compile_ahead=True, chat_template=template)
    app = server.build_app(m, alias, defaults, log=lambda line: click.echo(line, err=True), pooling=pooling)
    bound_host, bound_port = sock.getsockname()[:2]
    bound_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"qrun serve: {model or DEFAULT_MODEL} on http://{bound_host}:{bound_port}/v1 "
               f"(n_ctx {m.n_ctx}; Ctrl-C stops)", err=True)
    if not server.run(app, sock):
        raise click.ClickException("the server did not start (see uvicorn's messages above)")
    click.echo("qrun serve: stopped", err=True)


def _stats_line(s):
    """What the last generate/chat call did, e.g. "[prompt 45 tokens: 30 reused, 15 prefilled; 128 generated,
    120.5 tok/s; prefill 0.041 s, generation 1.062 s]". Generation is wall clock from the prompt's logits to the
    last token, sampling, detokenizing and writing the text included."""
    speed = s.generated_tokens / s.decode_seconds if s.decode_seconds > 0 else 0.0
    return (f"[prompt {s.prompt_tokens} tokens: {s.reused_tokens} reused, {s.prefilled_tokens} prefilled; "
            f"{s.generated_tokens} generated, {speed:.1f} tok/s; prefill {s.prefill_seconds:.3f} s, "
            f"generation {s.decode_seconds:.3f} s]")


def _read_line(interactive):
    """The next line the user typed, or None at the end of input (Ctrl-D, or Ctrl-C at the prompt)."""
    try:
        line = input("> ") if interactive else sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        if interactive:         # the shell's prompt starts on a line of its own
            sys.stdout.write("\n")
            sys.stdout.flush()
        return None
    return line if interactive or line else None


def _read_text(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def main(argv=None):
    """Entry point: every error ends in one line on stderr and a non-zero exit, never a traceback."""
    from kvant.formats.errors import run_cli
    return run_cli(qrun, "qrun", argv)


if __name__ == "__main__":
    sys.exit(main())
