"""qconv: Hugging Face checkpoints to GGUF, GGUF requantization, GGUF inspection.

    qconv to-gguf HF_DIR [-o OUT.gguf] [-t TYPE_OR_PRESET] [--tensor-type REGEX=TYPE ...] [--imatrix FILE]
                  [--threads N] [--force]
    qconv quantize IN.gguf OUT.gguf TYPE [--allow-requantize] [--tensor-type REGEX=TYPE ...] [--imatrix FILE]
                  [--threads N] [--force]
    qconv quantize IN.gguf OUT.gguf --target-bpw B --calibration TEXT [--types Q2_K,...,Q8_0] [--chunks K] ...
    qconv inspect FILE.gguf [--json]
    qconv imatrix MODEL.gguf -f TEXT [-o imatrix.gguf] [-c 512] [--chunks K] [--threads N] [--process-output]
                  [--output-format gguf|dat] [--parse-special] [--no-ppl] [--force]

Every error ends as one line on stderr and a non-zero exit (kvant.formats.errors.run_cli); an output file appears
only when it is complete.
"""
from __future__ import annotations

import os
import sys
import tempfile

import click

from kvant.formats import higgs_types
from kvant.formats.errors import run_cli

from . import recipes
from .gguf_writer import OutputExistsError

PRESET_HELP = "type or preset: " + ", ".join(recipes.valid_names())


def _overrides(values) -> list:
    return [recipes.parse_override(v) for v in values]


def _check_output(path: str, force: bool) -> None:
    if os.path.isdir(path):
        raise OutputExistsError(f"{path} is a directory")
    if os.path.exists(path) and not force:
        raise OutputExistsError(f"{path} exists (use --force to overwrite it)")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"the output directory {parent} does not exist")
    try:        # the output is written beside itself and renamed: the directory must take a new file, now
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as e:
        raise PermissionError(f"cannot write to the output directory {parent}: {e.strerror}") from None


def _imatrix(path):
    if path is None:
        return None
    from .imatrix import read_imatrix
    return read_imatrix(path)


def _done(out: str, n_tensors: int, preset: str, types=()) -> None:
    click.echo(f"qconv: wrote {out} ({preset}, {n_tensors} tensors, {os.path.getsize(out) / 1e6:.1f} MB)", err=True)
    own = sorted({t for t in types if higgs_types.is_higgs(t)})
    if own:
        click.echo(f"qconv: {out} holds kvant's own {', '.join(own)} tensors: it runs only in kvant (llama.cpp "
                   f"refuses it; `qconv quantize --allow-requantize` makes standard types of them)", err=True)


@click.group(help="Convert Hugging Face checkpoints to GGUF, requantize and inspect GGUF files.")
def qconv():
    pass


@qconv.command("to-gguf")
@click.argument("hf_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), help="output file (default: "
              "./<dir name>-<TYPE>.gguf)")
@click.option("-t", "--type", "preset", default=None, help=PRESET_HELP + " (default: the checkpoint's 16-bit "
              "float type)")
@click.option("--tensor-type", "tensor_types", multiple=True, metavar="REGEX=TYPE",
              help="ggml type for tensors whose GGUF name matches REGEX (first match wins; repeatable)")
@click.option("--imatrix", type=click.Path(dir_okay=False), default=None,
              help="importance matrix (llama.cpp GGUF or legacy .dat)")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="quantization threads")
@click.option("--force", is_flag=True, help="overwrite an existing output file")
def to_gguf(hf_dir, out, preset, tensor_types, imatrix, threads, force):
    """Convert the Hugging Face model in HF_DIR to a GGUF file."""
    from .pipeline import convert, output_path
    if preset is not None:
        preset = recipes.resolve_preset(preset)
    overrides = _overrides(tensor_types)
    if out is not None:
        _check_output(out, force)
    im = _imatrix(imatrix)
    if out is None:
        from .pipeline import auto_preset, open_model
        chosen = preset or auto_preset(open_model(hf_dir)[0])
        out = output_path(hf_dir, chosen)
        _check_output(out, force)
    plan = convert(hf_dir, out, preset, overrides, imatrix=im, imatrix_arg=imatrix, threads=threads, force=force)
    _done(out, len(plan.tensors), plan.preset, [t.type for t in plan.tensors])


@qconv.command("quantize")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.argument("preset", required=False)
@click.option("--allow-requantize", is_flag=True, help="allow re-encoding tensors that are already quantized")
@click.option("--tensor-type", "tensor_types", multiple=True, metavar="REGEX=TYPE",
              help="ggml type for tensors whose name matches REGEX (first match wins; repeatable)")
@click.option("--imatrix", type=click.Path(dir_okay=False), default=None,
              help="importance matrix (llama.cpp GGUF or legacy .dat)")
@click.option("--target-bpw", type=click.FloatRange(min=0, min_open=True), default=None,
              help="instead of PRESET: a type per tensor chosen for this many bits per weight (linearity theorem)")
@click.option("--types", "type_list", default=",".join(recipes.ALLOCATE_TYPES), show_default=True,
              help="with --target-bpw: the types to choose from, comma-separated")
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="with --target-bpw: text to measure each tensor's sensitivity on")
@click.option("--chunks", "n_chunks", type=click.IntRange(min=1), default=2, show_default=True,
              help="with --target-bpw: chunks of 512 tokens of the calibration text to measure on")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="quantization threads")
@click.option("--force", is_flag=True, help="overwrite an existing output file")
def quantize(src, dst, preset, allow_requantize, tensor_types, imatrix, target_bpw, type_list, calibration,
             n_chunks, threads, force):
    """Requantize SRC into DST with llama-quantize's rules for PRESET (metadata kept), or with a type per tensor
    chosen for --target-bpw bits per weight."""
    from .requantize import quantize_gguf
    if (preset is None) == (target_bpw is None):
        raise click.UsageError("give either a PRESET or --target-bpw")
    if target_bpw is not None and calibration is None:
        raise click.UsageError("--target-bpw needs --calibration TEXT (the text the tensors' sensitivities are "
                               "measured on)")
    preset = recipes.resolve_preset(preset) if preset is not None else None
    overrides = _overrides(tensor_types)
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src} does not exist")
    _check_output(dst, force)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise OutputExistsError("the output would overwrite the input")
    im = _imatrix(imatrix)
    if target_bpw is not None:
        from .allocate import allocate_and_report
        preset, overrides, report = allocate_and_report(src, target_bpw, type_list, calibration, im, n_chunks,
                                                        threads)
    types = quantize_gguf(src, dst, preset, overrides, imatrix=im, imatrix_arg=imatrix,
                          allow_requantize=allow_requantize, threads=threads, force=force)
    _done(dst, len(types), preset, types.values())
    if target_bpw is not None:
        report(dst)


@qconv.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
def inspect(path, as_json):
    """Print a GGUF file's metadata and tensor table."""
    from .inspect_gguf import describe, render_json, render_text
    d = describe(path)
    click.echo(render_json(d) if as_json else render_text(d))


@qconv.command("imatrix")
@click.argument("model_path", metavar="MODEL.gguf", type=click.Path(dir_okay=False))
@click.option("-f", "--file", "text_file", required=True, type=click.Path(dir_okay=False),
              help="text to run through the model (llama-imatrix's -f)")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None,
              help="output file (default: imatrix.gguf, or imatrix.dat with --output-format dat)")
@click.option("-c", "--ctx-size", "n_ctx", type=click.IntRange(min=1), default=512, show_default=True,
              help="tokens per chunk")
@click.option("--chunks", "n_chunks", type=int, default=-1, help="process at most K chunks (default: all)")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="threads for the model")
@click.option("--process-output", is_flag=True, help="collect output.weight too (llama-imatrix's flag)")
@click.option("--output-format", type=click.Choice(["gguf", "dat"]), default=None,
              help="llama.cpp's GGUF imatrix (default) or the legacy .dat")
@click.option("--parse-special", is_flag=True, help="parse the text of special tokens in the input")
@click.option("--no-ppl", is_flag=True, help="do not compute the perplexity of the chunks")
@click.option("--force", is_flag=True, help="overwrite an existing output file")
def imatrix(model_path, text_file, out, n_ctx, n_chunks, threads, process_output, output_format, parse_special,
            no_ppl, force):
    """Collect an importance matrix for MODEL.gguf from a text file, as llama-imatrix does."""
    from .imatrix_collect import collect, read_text, write_imatrix
    fmt = output_format or "gguf"
    if out is None:
        out = "imatrix.dat" if fmt == "dat" else "imatrix.gguf"
    elif output_format is None and not out.endswith(".gguf"):
        click.echo(f"qconv: warning: writing the GGUF imatrix format to {out} (without .gguf); "
                   f"use --output-format dat for the legacy format", err=True)
    _check_output(out, force)
    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"{model_path} does not exist")
    text = read_text(text_file)
    from kvant.runtime import Model
    model = Model(model_path, n_ctx=n_ctx, n_threads=threads)

    def progress(done, total, ppl, seconds):
        tail = f", ppl {ppl:.4f}" if ppl is not None else ""
        eta = seconds * (total - done)
        click.echo(f"qconv: chunk {done}/{total} ({seconds:.2f} s{tail}, ETA {eta / 60:.1f} min)", err=True)

    result = collect(model, text, n_ctx=n_ctx, n_chunks=n_chunks, process_output=process_output,
                     parse_special=parse_special, compute_ppl=not no_ppl, dataset=text_file, progress=progress)
    write_imatrix(out, result.stats, fmt, force=force)
    ppl = f", ppl {result.ppl:.4f}" if result.ppl is not None else ""
    click.echo(f"qconv: wrote {out} ({fmt}, {len(result.stats.sums)} entries, {result.n_chunks} chunks of "
               f"{n_ctx} tokens{ppl}, {result.seconds:.1f} s)", err=True)


def main(argv=None) -> int:
    return run_cli(qconv, "qconv", argv)


if __name__ == "__main__":
    sys.exit(main())
