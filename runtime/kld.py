"""KL divergence of a model's next-token distributions from a base model's, as llama-perplexity computes it.

The base file is llama-perplexity's own (--kl-divergence-base), so either tool reads the other's:
    "_logits_", u32 n_ctx, i32 n_vocab, i32 n_chunk, i32 tokens[n_chunk * n_ctx] (the text's tokens, before BOS
    is put at each chunk's start), then for each chunk the n_ctx - 1 - n_ctx // 2 scored positions, each a row of
    nv = 2 * ceil(n_vocab / 2) + 4 uint16: f32 scale and f32 min_log_prob, then one code per vocab entry,
    log p[i] = scale * code[i] + min_log_prob (codes of log-probabilities more than 16 below the best are 0).
A row is the log-softmax of the logits quantized to 16 bits over the top 16 nats. The statistics (per scored
token: the KL divergence over the entries the base gives log p > -16, whether the top token agrees, the change in
the probability of the correct token) and the summary lines follow llama-perplexity's kl_divergence().
"""
import math
import struct
from dataclasses import dataclass, field

import numpy as np

MAGIC = b"_logits_"
NOT_A_BASE = ("not a KL-divergence base file (llama-perplexity --kl-divergence-base writes one; so does qrun "
              "perplexity --kl-divergence-base)")
TOP_NATS = 16.0


class KLDivergenceFileError(ValueError):
    """A base file that is not one, is cut short, or belongs to a model with another vocabulary."""


def row_width(n_vocab: int) -> int:
    return 2 * ((n_vocab + 1) // 2) + 4


# -- the base file ------------------------------------------------------------------------------------------------

def write_header(f, n_ctx, n_vocab, n_chunks, tokens):
    f.write(MAGIC + struct.pack("<Iii", n_ctx, n_vocab, n_chunks))
    f.write(np.asarray(tokens, "<i4").tobytes())


def _log_softmax_parts(logits):
    """(max, log of the sum of exp(logit - max)) per row, as llama.cpp: float32 expf summed in double."""
    top = logits.max(axis=1)
    sum_exp = np.exp(logits - top[:, None]).astype(np.float64).sum(axis=1)
    return top, np.log(sum_exp).astype(np.float32)


def encode_rows(logits):
    """llama-perplexity's 16-bit log-probability rows of logits (T, n_vocab) float32: (T, nv) uint16."""
    logits = np.asarray(logits, np.float32)
    t, n_vocab = logits.shape
    top, lse = _log_softmax_parts(logits)
    low = np.maximum(logits.min(axis=1), top - np.float32(TOP_NATS))
    scale = (top - low) / np.float32(65535.0)
    rows = np.zeros((t, row_width(n_vocab)), np.uint16)
    rows[:, :4].view(np.float32)[:, 0] = scale
    rows[:, :4].view(np.float32)[:, 1] = low - top - lse
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(scale != 0, np.float32(1.0) / scale, np.float32(0.0)).astype(np.float32)
    # nearest_int: round half to even (the float trick llama.cpp uses)
    codes = np.rint(inv[:, None] * (logits - low[:, None])).astype(np.int64)
    rows[:, 4:4 + n_vocab] = np.where(logits > low[:, None], codes, 0).astype(np.uint16)
    return rows


def write_log_probs(f, logits):
    f.write(encode_rows(logits).astype("<u2").tobytes())


@dataclass
class BaseHeader:
    n_ctx: int
    n_vocab: int
    n_chunks: int
    tokens: np.ndarray


def _read_exact(f, size, what):
    data = f.read(size)
    if len(data) != size:
        raise KLDivergenceFileError(f"the KL-divergence base file is cut short ({what})")
    return data


def peek_n_ctx(f) -> int:
    """The chunk length a base file was computed with (the context a model needs to score it); f stays at 0."""
    head = f.read(len(MAGIC) + 4)
    f.seek(0)
    if len(head) < len(MAGIC) + 4 or head[:len(MAGIC)] != MAGIC:
        raise KLDivergenceFileError(NOT_A_BASE)
    return max(struct.unpack("<I", head[len(MAGIC):])[0], 8)


def read_header(f, n_vocab: int) -> BaseHeader:
    """The header and tokens of a base file, checked against this model's vocabulary size."""
    if f.read(len(MAGIC)) != MAGIC:
        raise KLDivergenceFileError(NOT_A_BASE)
    n_ctx, file_vocab, n_chunks = struct.unpack("<Iii", _read_exact(f, 12, "header"))
    if file_vocab != n_vocab:
        raise KLDivergenceFileError(f"the KL-divergence base was computed with a vocabulary of {file_vocab} tokens, "
                                    f"this model has {n_vocab}")
    if n_ctx < 4 or n_chunks < 1:
        raise KLDivergenceFileError(f"the KL-divergence base file has n_ctx={n_ctx}, {n_chunks} chunks")
    tokens = np.frombuffer(_read_exact(f, 4 * n_ctx * n_chunks, "tokens"), "<i4").astype(np.int64)
    if tokens.min() < 0 or tokens.max() >= n_vocab:
        raise KLDivergenceFileError("the KL-divergence base file holds token ids outside the vocabulary")
    return BaseHeader(n_ctx, file_vocab, n_chunks, tokens)


def read_log_probs(f, header: BaseHeader, n_rows: int) -> np.ndarray:
    nv = row_width(header.n_vocab)
    data = _read_exact(f, 2 * nv * n_rows, "log-probabilities")
    return np.frombuffer(data, "<u2").reshape(n_rows, nv)


def decode_rows(rows, n_vocab):
    """(scale, minimum, log-probabilities (T, n_vocab)) of base-file rows (T, nv) uint16, as llama-perplexity reads
    them: minimum + scale * code."""
    head = np.ascontiguousarray(rows[:, :4]).view(np.float32)
    scale, low = head[:, 0], head[:, 1]
    return scale, low, scale[:, None] * rows[:, 4:4 + n_vocab].astype(np.float32) + low[:, None]


# -- the statistics -----------------------------------------------------------------------------------------------

def _mean_and_uncertainty(total, total2, count):
    if count < 1:
        return 0.0, 0.0
    f = total / count
    df = total2 / count - f * f
    return f, (math.sqrt(df / (count - 1)) if df > 0 and count > 10 else 0.0)


def _covariance(a, b, ab, count):
    return 0.0 if count < 10 else (ab / count - (a / count) * (b / count)) / (count - 1)


def _percentile(values, fraction):
    if fraction <= 0:
        return float(values[0])
    if fraction >= 1:
        return float(values[-1])
    p = fraction * (len(values) - 1)
    i = int(p)
    p -= i
    return float((1 - p) * values[i] + p * values[min(i + 1, len(values) - 1)])


def _median(values):
    n = len(values)
    return float(0.5 * (values[n // 2] + values[n // 2 - 1]) if n % 2 == 0 else values[n // 2])


@dataclass
class KLDivergence:
    """Running sums over scored tokens, llama-perplexity's kl_divergence_result."""
    sums: dict = field(default_factory=lambda: dict.fromkeys(
        ("nll", "nll2", "nll_base", "nll_base2", "nll_nll_base", "kld", "kld2", "p_diff", "p_diff2", "p_diff4"), 0.0))
    n_same_top: int = 0
    count: int = 0
    kld_values: list = field(default_factory=list)
    p_diff_values: list = field(default_factory=list)

    def add(self, logits, targets, base_rows):
        """One chunk: logits (T, n_vocab) of this model, the targets, the base's rows (T, nv)."""
        logits = np.asarray(logits, np.float32)
        t, n_vocab = logits.shape
        top, lse = _log_softmax_parts(logits)
        rows = np.arange(t)
        nll = (top + lse - logits[rows, targets]).astype(np.float32)
        _, _, log_base = decode_rows(base_rows, n_vocab)
        nll_base = -log_base[rows, targets]
        shifted = (top + lse)[:, None]
        keep = log_base > np.float32(-TOP_NATS)
        terms = np.where(keep, np.exp(np.where(keep, log_base, 0)) * (log_base - logits + shifted), 0)
        kld = terms.astype(np.float64).sum(axis=1)
        p_diff = np.exp(-nll) - np.exp(-nll_base)
        s = self.sums
        for name, v in (("nll", nll), ("nll_base", nll_base), ("kld", kld), ("p_diff", p_diff)):
            v = v.astype(np.float64)
            s[name] += v.sum()
            s[name + "2"] += (v * v).sum()
        s["nll_nll_base"] += (nll.astype(np.float64) * nll_base).sum()
        s["p_diff4"] += (p_diff.astype(np.float64) ** 4).sum()
        self.n_same_top += int((logits.argmax(axis=1) == log_base.argmax(axis=1)).sum())
        self.count += t
        self.kld_values.extend(kld.astype(np.float32).tolist())
        self.p_diff_values.extend(p_diff.astype(np.float32).tolist())

    @property
    def ppl_q(self):
        return math.exp(self.sums["nll"] / max(self.count, 1))

    def summary(self) -> dict:
        """llama-perplexity's final statistics as one dict (None-free; percentiles as fractions)."""
        s, n = self.sums, self.count
        log_ppl, log_ppl_unc = _mean_and_uncertainty(s["nll"], s["nll2"], n)
        log_base, log_base_unc = _mean_and_uncertainty(s["nll_base"], s["nll_base2"], n)
        cov = _covariance(s["nll"], s["nll_base"], s["nll_nll_base"], n)
        ppl, ppl_base = math.exp(log_ppl), math.exp(log_base)
        ppl_unc, ppl_base_unc = ppl * log_ppl_unc, ppl_base * log_base_unc
        ratio_log = log_ppl - log_base
        ratio_log_unc = math.sqrt(max(log_ppl_unc ** 2 + log_base_unc ** 2 - 2 * cov, 0.0))
        kld_mean, kld_unc = _mean_and_uncertainty(s["kld"], s["kld2"], n)
        dp_mean, dp_unc = _mean_and_uncertainty(s["p_diff"], s["p_diff2"], n)
        mse, mse_unc = _mean_and_uncertainty(s["p_diff2"], s["p_diff4"], n)
        rms = math.sqrt(mse)
        same = self.n_same_top / n
        kv, pv = np.sort(np.asarray(self.kld_values)), np.sort(np.asarray(self.p_diff_values))
        return {
            "n_tokens": n,
            "ppl_q": ppl, "ppl_q_unc": ppl_unc, "ppl_base": ppl_base, "ppl_base_unc": ppl_base_unc,
            "cor_ln_ppl": cov / (log_ppl_unc * log_base_unc) if log_ppl_unc and log_base_unc else 0.0,
            "ln_ppl_ratio": ratio_log, "ln_ppl_ratio_unc": ratio_log_unc,
            "ppl_ratio": math.exp(ratio_log), "ppl_ratio_unc": math.exp(ratio_log) * ratio_log_unc,
            "ppl_diff": ppl - ppl_base,
            "ppl_diff_unc": math.sqrt(max(ppl_unc ** 2 + ppl_base_unc ** 2 - 2 * ppl * ppl_base * cov, 0.0)),
            "kld_mean": kld_mean, "kld_unc": kld_unc,
            "kld_percentiles": {"max": float(kv[-1]), "99.9": _percentile(kv, 0.999), "99.0": _percentile(kv, 0.99),
                                "95.0": _percentile(kv, 0.95), "90.0": _percentile(kv, 0.9), "median": _median(kv),
                                "10.0": _percentile(kv, 0.1), "5.0": _percentile(kv, 0.05),
                                "1.0": _percentile(kv, 0.01), "0.1": _percentile(kv, 0.001), "min": float(kv[0])},
            "dp_mean": dp_mean, "dp_unc": dp_unc,
            "dp_percentiles": {"max": float(pv[-1]), "99.9": _percentile(pv, 0.999), "99.0": _percentile(pv, 0.99),
                               "95.0": _percentile(pv, 0.95), "90.0": _percentile(pv, 0.9),
                               "75.0": _percentile(pv, 0.75), "median": _median(pv), "25.0": _percentile(pv, 0.25),
                               "10.0": _percentile(pv, 0.1), "5.0": _percentile(pv, 0.05),
                               "1.0": _percentile(pv, 0.01), "0.1": _percentile(pv, 0.001), "min": float(pv[0])},
            "rms_dp": rms, "rms_dp_unc": 0.5 / rms * mse_unc if rms else 0.0,
            "same_top_p": same, "same_top_p_unc": math.sqrt(same * (1 - same) / (n - 1)) if n > 1 else 0.0,
        }


_KLD_LABELS = (("max", "Maximum KLD"), ("99.9", "99.9%   KLD"), ("99.0", "99.0%   KLD"), ("95.0", "95.0%   KLD"),
               ("90.0", "90.0%   KLD"), ("median", "Median  KLD"), ("10.0", "10.0%   KLD"), ("5.0", " 5.0%   KLD"),
               ("1.0", " 1.0%   KLD"), ("0.1", " 0.1%   KLD"), ("min", "Minimum KLD"))
_DP_LABELS = (("max", "Maximum Δp"), ("99.9", "99.9%   Δp"), ("99.0", "99.0%   Δp"), ("95.0", "95.0%   Δp"),
              ("90.0", "90.0%   Δp"), ("75.0", "75.0%   Δp"), ("median", "Median  Δp"), ("25.0", "25.0%   Δp"),
              ("10.0", "10.0%   Δp"), ("5.0", " 5.0%   Δp"), ("1.0", " 1.0%   Δp"), ("0.1", " 0.1%   Δp"),
              ("min", "Minimum Δp"))


def summary_lines(r: dict) -> list:
    """The summary llama-perplexity prints after --kl-divergence, line for line."""
    lines = ["====== Perplexity statistics ======",
             f"Mean PPL(Q)                   : {r['ppl_q']:10.6f} ± {r['ppl_q_unc']:10.6f}",
             f"Mean PPL(base)                : {r['ppl_base']:10.6f} ± {r['ppl_base_unc']:10.6f}",
             f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * r['cor_ln_ppl']:6.2f}%",
             f"Mean ln(PPL(Q)/PPL(base))     : {r['ln_ppl_ratio']:10.6f} ± {r['ln_ppl_ratio_unc']:10.6f}",
             f"Mean PPL(Q)/PPL(base)         : {r['ppl_ratio']:10.6f} ± {r['ppl_ratio_unc']:10.6f}",
             f"Mean PPL(Q)-PPL(base)         : {r['ppl_diff']:10.6f} ± {r['ppl_diff_unc']:10.6f}",
             "", "====== KL divergence statistics ======",
             f"Mean    KLD: {r['kld_mean']:10.6f} ± {r['kld_unc']:10.6f}"]
    lines += [f"{label}: {r['kld_percentiles'][key]:10.6f}" for key, label in _KLD_LABELS]
    lines += ["", "====== Token probability statistics ======",
              f"Mean    Δp: {100 * r['dp_mean']:6.3f} ± {100 * r['dp_unc']:5.3f} %"]
    lines += [f"{label}: {100 * r['dp_percentiles'][key]:6.3f}%" for key, label in _DP_LABELS]
    lines += [f"RMS Δp    : {100 * r['rms_dp']:6.3f} ± {100 * r['rms_dp_unc']:5.3f} %",
              f"Same top p: {100 * r['same_top_p']:6.3f} ± {100 * r['same_top_p_unc']:5.3f} %"]
    return lines
