"""`qconv imatrix`: an importance matrix collected with kvant's runtime, as llama-imatrix collects it, written in
llama.cpp's GGUF imatrix format (or the legacy .dat).

What llama-imatrix (tools/imatrix/imatrix.cpp) does, and so this module:
- The text file is read whole; one trailing newline is dropped (common/arg.cpp, -f). It is tokenized with the
  vocabulary's special tokens (BOS where the vocab adds one; a vocab that adds EOS is refused), control-token text
  parsed only with --parse-special. At least 2 * n_ctx tokens are needed.
- The tokens are cut into chunks of n_ctx (at most --chunks of them); each chunk runs from an empty KV cache, with
  its first token replaced by BOS where the vocab adds one. Every position produces logits (llama-imatrix asks for
  all outputs), so every layer sees every token.
- For each matrix multiplication whose weight is named blk.* (and output.weight with --process-output; a tied output
  head is token_embd.weight, which llama-imatrix never collects) it adds, per input column j, the sum over the
  batch's rows of x[row, j]^2, and adds the number of rows to the weight's count (one count per dense weight).
  llama-imatrix skips matmuls of fewer than 16 rows (its callback is asked for every graph node, decode included);
  its own batches hold whole chunks (n_batch 2048 spans several n_ctx sequences, split in ubatches of 512), so in
  practice every token of every chunk is counted, and so here: each chunk is evaluated in pieces of up to n_batch
  tokens, a remainder of fewer than 16 joined to the piece before it, and with n_ctx < 16 (where llama.cpp would put
  several chunks in one ubatch) the threshold is n_ctx. Sums are accumulated in float64 (llama.cpp: float32, row by
  row) and stored as float32.
- A non-finite sum stops the run ("non-finite values detected in NAME").
- The perplexity of the second half of each chunk is reported as llama-imatrix reports it (--no-ppl skips it).

The GGUF file (save_imatrix): keys general.type = "imatrix", imatrix.datasets (string array: the -f argument as
given), imatrix.chunk_count (u32: the largest count // chunk_size), imatrix.chunk_size (u32: n_ctx); then, for each
weight name in byte order, NAME.in_sum2 (F32, ggml ne [n_cols, n_mat], so 1-D for a dense weight: ggml writes
ggml_n_dims) and NAME.counts (F32, ne [1, n_mat]), alignment 32, no general.alignment key.
The legacy .dat (save_imatrix_legacy): i32 number of entries with some data; per entry in byte order: i32 name
length, the name, i32 ncall = ceil(max count / chunk_size), i32 n_values, f32 values (sum / count) * ncall (1 * ncall
where a count is 0); then i32 chunk count, i32 dataset-name length and the name.
Both are written to a temp file beside the target and renamed when complete; an existing file is replaced only
with force.
"""
from __future__ import annotations

import math
import os
import struct
import time
from dataclasses import dataclass, field

import numpy as np

from kvant.convert.gguf_writer import public_mode

MIN_ROWS = 16  # llama-imatrix ignores matmuls with fewer rows


class ImatrixCollectError(ValueError):
    """The collection cannot run or went wrong (one readable sentence)."""


@dataclass
class ImatrixStats:
    """Raw statistics, as llama-imatrix keeps them: per weight, sums of x^2 (n_mat, n_cols) and counts (n_mat,)."""
    sums: dict[str, np.ndarray] = field(default_factory=dict)    # float64 (n_mat, n_cols)
    counts: dict[str, np.ndarray] = field(default_factory=dict)  # int64 (n_mat,)
    datasets: list[str] = field(default_factory=list)
    chunk_size: int = 512

    @property
    def chunk_count(self) -> int:
        """llama-imatrix's m_last_chunk: the largest count in whole chunks."""
        top = max((int(c.max()) for c in self.counts.values() if c.size), default=0)
        return top // self.chunk_size if self.chunk_size > 0 else 0

    def means(self) -> dict[str, np.ndarray]:
        """Per-column importance as llama-quantize computes it from the GGUF file (float32 sum / count, 1 where
        the count is 0), flattened."""
        out = {}
        for name, s in self.sums.items():
            s32 = s.astype(np.float32)
            c = self.counts[name].astype(np.float32)[:, None]
            out[name] = np.where(c > 0, s32 / np.where(c > 0, c, np.float32(1)), np.float32(1)).reshape(-1)
        return out


class Collector:
    """The observer for kvant.runtime's Transformer: accumulates x^2 per input column of the weights
    llama-imatrix collects."""

    def __init__(self, process_output: bool = False, min_rows: int = MIN_ROWS, every_matrix: bool = False):
        self.process_output = process_output
        self.min_rows = min_rows
        self.every_matrix = every_matrix      # also token_embd as a tied output head (the allocator's energies)
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}

    def wants(self, name: str) -> bool:
        return self.every_matrix or name.startswith("blk.") or (self.process_output and name == "output.weight")

    def __call__(self, name: str, x: np.ndarray) -> None:
        if x.ndim != 2 or x.shape[0] < self.min_rows or not self.wants(name):
            return
        sq = np.einsum("ij,ij->j", x, x, dtype=np.float64)
        acc = self.sums.get(name)
        if acc is None:
            self.sums[name] = sq[None, :].copy()
            self.counts[name] = np.array([x.shape[0]], np.int64)
            return
        if acc.shape[1] != sq.shape[0]:
            raise ImatrixCollectError(f"inconsistent size for {name} ({acc.shape[1]} vs {sq.shape[0]})")
        acc[0] += sq
        self.counts[name][0] += x.shape[0]

    def check_finite(self) -> None:
        for name, s in self.sums.items():
            if not np.isfinite(s).all():
                raise ImatrixCollectError(f"non-finite values detected in {name}")

    def stats(self, datasets, chunk_size: int) -> ImatrixStats:
        return ImatrixStats(dict(self.sums), dict(self.counts), list(datasets), chunk_size)


@dataclass
class CollectResult:
    stats: ImatrixStats
    n_chunks: int
    n_tokens: int
    ppl: float | None
    seconds: float


def read_text(path: str) -> str:
    """The prompt file as llama.cpp's -f reads it: whole, one trailing newline dropped."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImatrixCollectError(f"cannot read the text file {path}: {e.strerror or e}") from None
    text = data.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") else text


def chunk_pieces(n_ctx: int, n_batch: int, min_rows: int = MIN_ROWS) -> list[tuple[int, int]]:
    """(start, end) of the forward calls for one chunk: n_batch tokens each, a short remainder joined to the piece
    before it so that no call has fewer than min_rows tokens (unless the chunk itself is that short)."""
    bounds = list(range(0, n_ctx, max(1, n_batch))) + [n_ctx]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < min_rows:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


def chunk_tokens(tokens: list[int], n_ctx: int, n_chunks: int | None, bos_id: int | None) -> list[list[int]]:
    """llama-imatrix's chunks: consecutive n_ctx tokens, the first replaced by BOS where the vocab adds one."""
    if len(tokens) < 2 * n_ctx:
        raise ImatrixCollectError(f"the text tokenizes to {len(tokens)} tokens; an importance matrix with a context "
                                  f"of {n_ctx} needs at least {2 * n_ctx} (as llama-imatrix)")
    n_max = len(tokens) // n_ctx
    n = n_max if n_chunks is None or n_chunks <= 0 else min(n_chunks, n_max)
    out = []
    for c in range(n):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if bos_id is not None:
            chunk[0] = bos_id
        out.append(chunk)
    return out


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    x = logits.astype(np.float64)
    m = x.max(axis=1)
    lse = np.log(np.exp(x - m[:, None]).sum(axis=1)) + m
    return float(np.sum(lse - x[np.arange(len(targets)), targets]))


def collect(model, text: str, n_ctx: int = 512, n_chunks: int | None = None, process_output: bool = False,
            parse_special: bool = False, compute_ppl: bool = True, dataset: str = "", progress=None) -> CollectResult:
    """Run the text through model (a kvant.runtime.Model whose cache holds at least n_ctx tokens) chunk by chunk
    and collect the importance matrix. progress(done, total, ppl_or_None, seconds_per_chunk) after each chunk."""
    from kvant.runtime.model import KVCache
    if n_ctx < 1:
        raise ImatrixCollectError("the context size must be positive")
    tok = model.tokenizer
    if tok.add_eos:
        raise ImatrixCollectError("the vocabulary adds EOS to every text; llama-imatrix refuses such models")
    tokens = tok.encode(text, add_special=True, parse_special=parse_special)
    chunks = chunk_tokens(tokens, n_ctx, n_chunks, tok.bos_id if tok.add_bos else None)
    cache = model.cache if model.cache.n_ctx >= n_ctx else KVCache(model.config, n_ctx, model.kv_type)
    model.reset()  # the cache is overwritten: the model's own record of cached tokens no longer holds
    transformer = model.transformer
    collector = Collector(process_output, min_rows=min(MIN_ROWS, n_ctx))
    pieces = chunk_pieces(n_ctx, getattr(model, "n_batch", 512))
    first = n_ctx // 2
    nll, count = 0.0, 0
    t_start = time.perf_counter()
    previous = transformer.observer
    transformer.observer = collector
    try:
        for c, chunk in enumerate(chunks):
            t0 = time.perf_counter()
            rows = []
            for start, end in pieces:
                scored = compute_ppl and end > first
                skip = max(0, first - start)     # rows of this piece before the scored half
                if process_output:
                    frm = 0                      # every position through the output head, as llama-imatrix
                elif scored:
                    frm = skip                   # only the scored positions need logits
                else:
                    frm = None                   # the last position only: its logits are not used
                logits = transformer.forward(chunk[start:end], start, cache, logits_from=frm)
                if scored:
                    rows.append(logits[skip - frm:])
            collector.check_finite()
            ppl = None
            if compute_ppl:
                logits = np.concatenate(rows)[:n_ctx - 1 - first]
                targets = np.asarray(chunk[first + 1:], np.int64)
                nll += _nll(logits, targets)
                count += len(targets)
                ppl = math.exp(nll / count) if count else None
            if progress is not None:
                progress(c + 1, len(chunks), ppl, time.perf_counter() - t0)
    finally:
        transformer.observer = previous
    stats = collector.stats([dataset] if dataset else [], n_ctx)
    return CollectResult(stats, len(chunks), len(chunks) * n_ctx, math.exp(nll / count) if count else None,
                         time.perf_counter() - t_start)


# ------------------------------------------------------------------------------------------------- writing
def _atomic_write(path: str, chunks, force: bool) -> None:
    from .gguf_writer import OutputExistsError, temp_beside
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise OutputExistsError(f"{path} is a directory")
    if os.path.exists(path) and not force:
        raise OutputExistsError(f"{path} exists (use --force to overwrite it)")
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        public_mode(tmp)
        if os.path.exists(path) and not force:
            raise OutputExistsError(f"{path} appeared while writing (use --force to overwrite it)")
        os.replace(tmp, path)
        tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_imatrix_gguf(path: str, stats: ImatrixStats, force: bool = False) -> None:
    """llama-imatrix's save_imatrix: the GGUF imatrix file, byte for byte as ggml's gguf writer lays it out."""
    import gguf
    from gguf.gguf_writer import GGUFValue

    from .gguf_writer import GGUFWriter, tensor_spec
    if not stats.sums:
        raise ImatrixCollectError("nothing was collected (no matrix multiplication of a blk.* weight ran)")
    vt = gguf.GGUFValueType
    kv = [("general.type", GGUFValue("imatrix", vt.STRING))]
    if stats.datasets:
        kv.append(("imatrix.datasets", GGUFValue(list(stats.datasets), vt.ARRAY, vt.STRING)))
    else:  # ggml writes an empty string array; the gguf package's rules refuse one, so pack it here
        from .gguf_writer import RawValue
        kv.append(("imatrix.datasets", RawValue(struct.pack("<IIQ", vt.ARRAY, vt.STRING, 0))))
    kv.append(("imatrix.chunk_count", GGUFValue(stats.chunk_count, vt.UINT32)))
    kv.append(("imatrix.chunk_size", GGUFValue(int(stats.chunk_size), vt.UINT32)))
    specs, data = [], []
    for name in sorted(stats.sums, key=lambda s: s.encode("utf-8")):
        sums = np.asarray(stats.sums[name])
        counts = np.asarray(stats.counts[name]).reshape(-1)
        n_mat = counts.size
        if n_mat == 0 or sums.size == 0:
            continue
        sums = sums.reshape(n_mat, -1)
        # ggml_n_dims: trailing dimensions of 1 are not written
        specs.append(tensor_spec(f"{name}.in_sum2", sums.shape if n_mat > 1 else (sums.shape[1],), "F32"))
        data.append(sums.astype(np.float32))
        specs.append(tensor_spec(f"{name}.counts", (n_mat, 1) if n_mat > 1 else (1,), "F32"))
        data.append(counts.astype(np.float32))
    with GGUFWriter(path, kv, specs, force=force) as w:
        for spec, d in zip(specs, data):
            w.write_tensor(spec.name, d)
    public_mode(path)


def legacy_bytes(stats: ImatrixStats) -> bytes:
    """llama-imatrix's save_imatrix_legacy, byte for byte."""
    cs = int(stats.chunk_size)
    names = sorted((n for n, c in stats.counts.items() if c.size and (c != 0).any()), key=lambda s: s.encode())
    if not names:
        raise ImatrixCollectError("nothing was collected (no matrix multiplication of a blk.* weight ran)")
    out = [struct.pack("<i", len(names))]
    for name in names:
        b = name.encode("utf-8")
        counts = np.asarray(stats.counts[name]).reshape(-1)
        values = np.asarray(stats.sums[name]).reshape(-1).astype(np.float32)
        ncall = (int(counts.max()) + (cs - 1)) // cs
        nval, nmat = values.size, counts.size
        cnt = np.repeat(counts.astype(np.float32), nval // nmat)
        zero = cnt == 0
        values = np.where(zero, np.float32(1), values)
        cnt = np.where(zero, np.float32(1), cnt)
        tmp = (values / cnt) * np.float32(ncall)
        out.append(struct.pack("<i", len(b)) + b + struct.pack("<ii", ncall, nval))
        out.append(tmp.astype("<f4").tobytes())
    out.append(struct.pack("<i", stats.chunk_count))
    dataset = (stats.datasets[-1] if stats.datasets else "").encode("utf-8")
    out.append(struct.pack("<i", len(dataset)) + dataset)
    return b"".join(out)


def write_imatrix_dat(path: str, stats: ImatrixStats, force: bool = False) -> None:
    _atomic_write(path, [legacy_bytes(stats)], force)


def write_imatrix(path: str, stats: ImatrixStats, output_format: str = "gguf", force: bool = False) -> None:
    if output_format == "gguf":
        write_imatrix_gguf(path, stats, force)
    elif output_format == "dat":
        write_imatrix_dat(path, stats, force)
    else:
        raise ValueError(f"unknown imatrix output format {output_format!r} (gguf, dat)")


def stats_from_file(path: str) -> ImatrixStats:
    """Raw sums and counts back from a GGUF imatrix (as llama-imatrix's --in-file loads one)."""
    from .imatrix import COUNTS, IN_SUM2, open_imatrix_gguf
    with open_imatrix_gguf(path) as g:
        md = g.metadata
        st = ImatrixStats(datasets=list(md.get("imatrix.datasets", [])),
                          chunk_size=int(md.get("imatrix.chunk_size", 0)))
        for name, info in g.tensors.items():
            if name.endswith(IN_SUM2):
                base = name[:-len(IN_SUM2)]
                c = g.raw(base + COUNTS).view(np.float32).reshape(-1)
                st.counts[base] = np.floor(c.astype(np.float64) + 0.5).astype(np.int64)
                st.sums[base] = g.raw(name).view(np.float32).reshape(c.size, -1).astype(np.float64)
        return st
