"""qconv: Hugging Face checkpoints to GGUF, GGUF requantization, GGUF inspection.

    qconv to-gguf HF_DIR [-o OUT.gguf] [-t TYPE_OR_PRESET] [--tensor-type REGEX=TYPE ...] [--imatrix FILE]
                  [--threads N] [--force]
    qconv quantize IN.gguf OUT.gguf TYPE [--allow-requantize] [--tensor-type REGEX=TYPE ...] [--imatrix FILE]
                  [--threads N] [--force]
    qconv inspect FILE.gguf [--json]

Every error ends as one line on stderr and a non-zero exit (kvant.formats.errors.run_cli); an output file appears
only when it is complete.
"""
from __future__ import annotations

import os
import sys

import click

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


def _imatrix(path):
    if path is None:
        return None
    from .imatrix import read_imatrix
    return read_imatrix(path)


def _done(out: str, n_tensors: int, preset: str) -> None:
    click.echo(f"qconv: wrote {out} ({preset}, {n_tensors} tensors, {os.path.getsize(out) / 1e6:.1f} MB)", err=True)


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
    _done(out, len(plan.tensors), plan.preset)


@qconv.command("quantize")
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.argument("preset")
@click.option("--allow-requantize", is_flag=True, help="allow re-encoding tensors that are already quantized")
@click.option("--tensor-type", "tensor_types", multiple=True, metavar="REGEX=TYPE",
              help="ggml type for tensors whose name matches REGEX (first match wins; repeatable)")
@click.option("--imatrix", type=click.Path(dir_okay=False), default=None,
              help="importance matrix (llama.cpp GGUF or legacy .dat)")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="quantization threads")
@click.option("--force", is_flag=True, help="overwrite an existing output file")
def quantize(src, dst, preset, allow_requantize, tensor_types, imatrix, threads, force):
    """Requantize SRC into DST with llama-quantize's rules for PRESET (metadata kept)."""
    from .requantize import quantize_gguf
    preset = recipes.resolve_preset(preset)
    overrides = _overrides(tensor_types)
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src} does not exist")
    _check_output(dst, force)
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise OutputExistsError("the output would overwrite the input")
    types = quantize_gguf(src, dst, preset, overrides, imatrix=_imatrix(imatrix), imatrix_arg=imatrix,
                          allow_requantize=allow_requantize, threads=threads, force=force)
    _done(dst, len(types), preset)


@qconv.command("inspect")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of text")
def inspect(path, as_json):
    """Print a GGUF file's metadata and tensor table."""
    from .inspect_gguf import describe, render_json, render_text
    d = describe(path)
    click.echo(render_json(d) if as_json else render_text(d))


def main(argv=None) -> int:
    return run_cli(qconv, "qconv", argv)


if __name__ == "__main__":
    sys.exit(main())
