"""`qconv quantize IN OUT --target-bpw B`: a type for every tensor, chosen by the linearity theorem.

The theorem (Malinovskii et al., "Pushing the Limits of Large Language Model Quantization via the Linearity
Theorem", NAACL 2025): for small errors, the increase of a model's loss is close to a weighted sum of its tensors'
relative squared errors, sum_t alpha_t * err_t, with err_t = |W_t - Q(W_t)|^2 / |W_t|^2 and alpha_t a sensitivity of
tensor t alone. So:
1. alpha_t: add Gaussian noise of relative energy eta to tensor t in kvant's runtime and see how much the mean
   negative log-likelihood of the calibration text moves. The noise is added once as +e and once as -e (the same
   draw): the loss's first-order term cancels in the mean of the two, which leaves the curvature the theorem
   is about. Each probe starts at the first layer the tensor feeds, from the hidden states of the clean pass.
2. err_t for every tensor and candidate type: quantize it (with the importance matrix, if given, as the final
   quantization uses it) and measure, each input column weighted by the energy of the activations it multiplies
   on the calibration text: the probe's noise is spread evenly, and the weighting says what an error of another
   shape is worth against it.
3. The types: a multiple-choice knapsack (minimise the predicted loss increase under the byte budget of B bits per
   weight, counted over every tensor as llama.cpp counts BPW), solved exactly by dynamic programming over the budget
   in 1/BUDGET_STEPS parts (each tensor's bytes rounded up, so the file never exceeds B).
A type whose blocks do not tile a tensor's rows is replaced for it by llama-quantize's fallback (Q4_K -> Q5_0 on a
576-wide row), as the presets do. With only ggml types the output is an ordinary GGUF that llama.cpp runs.
"""
from __future__ import annotations

import math
import re
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from kvant.formats.dequant import dequantize
from kvant.formats.ggml_types import ggml_type
from kvant.formats.gguf_file import GGUFFile
from kvant.formats.quant import quantize

from . import recipes

BUDGET_STEPS = 20000
ETA = 0.005          # relative noise energy of a sensitivity probe (about a 4-bit type's error)


class AllocateError(ValueError):
    """The allocation cannot be made (one readable sentence)."""


@dataclass
class Choice:
    type: str
    nbytes: int
    err: float        # relative squared error of the tensor in this type


@dataclass
class Allocation:
    types: dict[str, str]            # every candidate tensor's chosen type
    predicted_dloss: float           # sum alpha_t err_t of the choice (nats per token)
    bpw: float                       # of the whole file
    alphas: dict[str, float]
    base_loss: float

    @property
    def predicted_ppl_increase(self) -> float:
        """Predicted perplexity increase, in %."""
        return 100 * math.expm1(self.predicted_dloss)


def parse_types(text: str) -> tuple[str, ...]:
    names = tuple(t.strip().upper() for t in text.split(",") if t.strip())
    if not names:
        raise AllocateError("--types needs at least one type name")
    for n in names:
        ggml_type(n)                                  # UnknownTypeError names a bad one
    return names


def allowed_types(file: GGUFFile, types) -> dict[str, list[str]]:
    """Per quantizable tensor: the distinct types it can take (a type whose blocks do not tile its rows replaced by
    llama-quantize's fallback), smallest first."""
    out = {}
    for name, info in file.tensors.items():
        if recipes.allows_quantization(name, info.shape):
            kinds = {recipes.fallback(t, info.shape[-1]) for t in types}
            out[name] = sorted(kinds, key=lambda t: (ggml_type(t).row_bytes(info.shape[-1]), t))
    return out


def smallest_bpw(file: GGUFFile, allowed: dict[str, list[str]]) -> float:
    fixed, n_weights = fixed_bytes_and_weights(file, allowed)
    least = sum(file.tensors[n].n_rows * ggml_type(ts[0]).row_bytes(file.tensors[n].shape[-1])
                for n, ts in allowed.items())
    return 8 * (fixed + least) / n_weights


def relative_error(delta: np.ndarray, w: np.ndarray, col_energy: np.ndarray | None) -> float:
    """|delta|^2 / |w|^2, each column weighted by the energy of the activations it multiplies (None: uniformly).
    Normalised so that noise of relative energy eta spread evenly over w scores eta whatever the weights: the
    sensitivity was measured with such noise, and this says how much of it an error of another shape is worth."""
    d2 = np.square(delta, dtype=np.float64).sum(axis=0)
    if col_energy is None or not col_energy.any():
        return float(d2.sum() / (np.square(w, dtype=np.float64).sum() or 1.0))
    m = col_energy / col_energy.sum()
    return float((d2 * m).sum() / (np.square(w, dtype=np.float64).mean() * w.shape[0] or 1.0))


def candidates(file: GGUFFile, allowed: dict[str, list[str]], imatrix=None, energies=None,
               progress=None) -> dict[str, list[Choice]]:
    """Each tensor's allowed types with their bytes and the tensor's relative squared error in them (weighted by
    energies[name], the activation energy per input column, where given)."""
    from .pipeline import imatrix_for
    out = {}
    for k, (name, types) in enumerate(allowed.items()):
        info = file.tensors[name]
        x = dequantize(file.raw(name), info.ggml_type).reshape(info.n_rows, -1)
        qw = imatrix_for(imatrix, name, x.shape[-1]) if imatrix is not None else None
        col = (energies or {}).get(name)
        out[name] = []
        for t in types:
            raw = quantize(x, t, qw)
            err = relative_error(dequantize(raw, t).reshape(x.shape) - x, x, col)
            out[name].append(Choice(t, int(raw.nbytes), err))
        if progress:
            progress(k + 1, len(allowed))
    return out


def _calibration_tokens(model, text: str, n_ctx: int, n_chunks: int) -> tuple[list, int]:
    """The calibration text's tokens and how many whole chunks of n_ctx (at most n_chunks) they give."""
    tokens = model.tokenize(text, add_bos=None)
    if len(tokens) < n_ctx:
        raise AllocateError(f"the calibration text has {len(tokens)} tokens; it needs at least {n_ctx}")
    return tokens, max(1, min(n_chunks, len(tokens) // n_ctx))


def _mean_nll(model, tokens, n_ctx, n_chunks, states=None, from_layer=0) -> float:
    from kvant.runtime.api import _nll
    total, count = 0.0, 0
    for targets, logits in model.scored_chunks(tokens, n_ctx, n_chunks, states, from_layer):
        total += _nll(logits, targets)
        count += len(targets)
    return total / count


def _first_layer_reading(name: str, n_layer: int) -> int:
    """The first layer whose output a change to the tensor moves (n_layer: only the output head's)."""
    m = re.match(r"blk\.(\d+)\.", name)
    if m:
        return int(m.group(1))
    return n_layer if name == "output.weight" else 0


@dataclass
class Sensitivity:
    alphas: dict[str, float]          # loss increase per unit of relative squared error, per tensor
    base_loss: float                  # the unperturbed mean NLL
    energies: dict[str, np.ndarray]   # sum of x^2 per input column of each matrix, over the calibration tokens


def sensitivities(model_path: str, names, text: str, n_ctx: int = 512, n_chunks: int = 2, eta: float = ETA,
                  seed: int = 0, threads=None, progress=None) -> Sensitivity:
    """Each tensor's alpha on the first n_chunks chunks of text, and the activations' energies seen meanwhile."""
    from kvant.runtime.api import Model
    from kvant.runtime.editable import EditableWeights
    from .imatrix_collect import Collector
    with Model(model_path, n_ctx=n_ctx, n_threads=threads, n_batch=n_ctx) as model:
        tokens, n_chunks = _calibration_tokens(model, text, n_ctx, n_chunks)
        weights = EditableWeights(model.transformer)
        energy = Collector(min_rows=1, every_matrix=True)
        model.transformer.observer = energy
        states = []                     # per chunk, the hidden states entering each layer: a probe of layer i
        base = _mean_nll(model, tokens, n_ctx, n_chunks, states)      # starts there
        model.transformer.observer = None
        n_layer = model.config.n_layer
        rng = np.random.default_rng(seed)
        alphas = {}
        for k, name in enumerate(names):
            w = weights.rows[name]
            original = w.copy()
            noise = rng.standard_normal(w.shape, dtype=np.float32)
            noise *= np.float32(math.sqrt(eta * float(np.square(w, dtype=np.float64).mean())))
            layer = _first_layer_reading(name, n_layer)
            resume = (states, layer) if layer > 0 else (None, 0)
            np.add(original, noise, out=w)
            up = _mean_nll(model, tokens, n_ctx, n_chunks, *resume)
            np.subtract(original, noise, out=w)
            down = _mean_nll(model, tokens, n_ctx, n_chunks, *resume)
            w[:] = original
            alphas[name] = max(0.0, ((up + down) / 2 - base) / eta)
            if progress:
                progress(k + 1, len(names))
    return Sensitivity(alphas, base, {n: s[0] for n, s in energy.sums.items()})


def solve(choices: dict[str, list[Choice]], alphas: dict[str, float], budget: int) -> tuple[dict[str, str], float]:
    """The types minimising sum alpha_t err_t with sum of bytes <= budget: exact DP on the budget in BUDGET_STEPS
    parts (bytes rounded up per tensor). Returns (types, predicted loss increase)."""
    names = list(choices)
    unit = max(1, math.ceil(budget / BUDGET_STEPS))
    steps = budget // unit
    least = sum(math.ceil(c[0].nbytes / unit) for c in choices.values())
    if least > steps:
        raise AllocateError("the target is below what the smallest of the types gives")
    inf = np.inf
    best = np.zeros(steps + 1)                   # best[b]: least cost of the tensors so far within b units
    picks = np.empty((len(names), steps + 1), np.int16)
    for i, name in enumerate(names):
        new = np.full(steps + 1, inf)
        pick = np.full(steps + 1, -1, np.int16)
        for j, c in enumerate(choices[name]):
            w = math.ceil(c.nbytes / unit)
            if w > steps:
                continue
            cand = np.full(steps + 1, inf)
            cand[w:] = best[:steps + 1 - w] + alphas[name] * c.err
            better = cand < new
            new[better] = cand[better]
            pick[better] = j
        best, picks[i] = new, pick
    b = int(np.argmin(best))
    cost = float(best[b])
    types = {}
    for i in range(len(names) - 1, -1, -1):
        c = choices[names[i]][picks[i, b]]
        types[names[i]] = c.type
        b -= math.ceil(c.nbytes / unit)
    return {n: types[n] for n in names}, cost


def fixed_bytes_and_weights(file: GGUFFile, tensor_names) -> tuple[int, int]:
    """(bytes of the tensors not allocated, kept as they are; elements of every tensor)."""
    fixed = sum(t.nbytes for n, t in file.tensors.items() if n not in tensor_names)
    return fixed, sum(int(np.prod(t.shape)) for t in file.tensors.values())


def allocate(src: str, target_bpw: float, types, calibration_text: str, imatrix=None, n_ctx: int = 512,
             n_chunks: int = 2, threads=None, progress=None) -> Allocation:
    """The per-tensor types for src at target_bpw bits per weight (see the module's docstring)."""
    say = progress or (lambda *a: None)
    with GGUFFile(src) as file:
        allowed = allowed_types(file, types)
        least = smallest_bpw(file, allowed)
        if target_bpw < least:
            raise AllocateError(f"--target-bpw {target_bpw:g} is below the smallest file these types make "
                                f"({least:.3f} bits per weight)")
    sens = sensitivities(src, list(allowed), calibration_text, n_ctx, n_chunks, threads=threads,
                         progress=lambda k, n: say("sensitivities", k, n))
    with GGUFFile(src) as file:
        choices = candidates(file, allowed, imatrix, sens.energies, lambda k, n: say("errors", k, n))
        fixed, n_weights = fixed_bytes_and_weights(file, choices)
    budget = int(target_bpw * n_weights / 8) - fixed
    chosen, dloss = solve(choices, sens.alphas, budget)
    size = fixed + sum(next(c.nbytes for c in choices[n] if c.type == t) for n, t in chosen.items())
    return Allocation(chosen, dloss, 8 * size / n_weights, sens.alphas, sens.base_loss)


def overrides_for(types: dict[str, str]) -> list:
    """--tensor-type overrides that give each named tensor exactly its type."""
    return [(re.compile("^" + re.escape(name) + "$"), t) for name, t in types.items()]


def file_preset(types: dict[str, str], file: GGUFFile) -> str:
    """The preset named for the file's general.file_type: that of the type holding the most weights."""
    weight = {}
    for name, t in types.items():
        weight[t] = weight.get(t, 0) + int(np.prod(file.tensors[name].shape))
    top = max(weight, key=weight.get)
    try:
        return recipes.resolve_preset(top)
    except recipes.PresetError:
        return "F16"


class _Progress:
    """One bar a stage on stderr, shown on a terminal only (tqdm's disable=None)."""

    def __init__(self):
        self.bar, self.stage = None, None

    def __call__(self, stage, done, total):
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=f"qconv: {stage}", file=sys.stderr, disable=None, leave=False)
        self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def allocate_and_report(src: str, target_bpw: float, type_list: str, calibration_path: str, imatrix, n_chunks: int,
                        threads):
    """For the CLI: (preset, overrides, report(dst)) where report prints the predicted and the measured perplexity
    increase on the calibration chunks."""
    from .imatrix_collect import read_text
    types = parse_types(type_list)
    text = read_text(calibration_path)
    progress = _Progress()
    try:
        result = allocate(src, target_bpw, types, text, imatrix, n_chunks=n_chunks, threads=threads,
                          progress=progress)
    finally:
        progress.close()
    with GGUFFile(src) as file:
        preset = file_preset(result.types, file)
    counts = Counter(result.types.values())
    print(f"qconv: {result.bpw:.3f} bits per weight: " + ", ".join(f"{n} x {t}" for t, n in sorted(counts.items())),
          file=sys.stderr)

    def report(dst):
        measured = measured_dloss(dst, text, result.base_loss, n_chunks, threads)
        print(f"qconv: perplexity increase on the calibration text ({n_chunks} chunks of 512): predicted "
              f"{result.predicted_ppl_increase:.2f}% (linearity theorem), measured {100 * math.expm1(measured):.2f}%",
              file=sys.stderr)
    return preset, overrides_for(result.types), report


def measured_dloss(path: str, text: str, base_loss: float, n_chunks: int, threads=None, n_ctx: int = 512) -> float:
    """The mean NLL of the model at path on the calibration chunks, less the base's."""
    from kvant.runtime.api import Model
    with Model(path, n_ctx=n_ctx, n_threads=threads) as model:
        tokens, n_chunks = _calibration_tokens(model, text, n_ctx, n_chunks)
        return _mean_nll(model, tokens, n_ctx, n_chunks) - base_loss
