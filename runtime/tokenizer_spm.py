"""SentencePiece-style tokenizers ("llama" in GGUF) on the `sentencepiece` library.

llama.cpp's llm_tokenizer_spm splits a fragment into UTF-8 characters and merges the adjacent pair whose
concatenation is a token with the highest score (ties: leftmost) until no pair is a token; a character that is not a
token is spelled with <0xNN> byte tokens. sentencepiece's BPE model (bpe_model.cc) runs the same loop with the same
order, given a ModelProto in which every token is a NORMAL piece (so control, user-defined and unused tokens merge
like any other, as in llama.cpp), the unknown token is UNKNOWN and the <0xNN> tokens are BYTE pieces with
byte_fallback on, and a normalizer that does nothing (llama.cpp itself writes U+2581 for spaces and adds the prefix).
The one thing sentencepiece cannot do is merge two pieces into an UNKNOWN or BYTE piece, which llama.cpp does when the
text spells one ("<unk>", "<0x41>") and the pieces leading to it are tokens. Vocabularies where that can happen are
found at load time, and only the fragments containing such a spelling go through `spm_merge`, a plain Python
transcription of llama.cpp's loop.
"""

import heapq
from collections.abc import Callable, Sequence

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

# sentencepiece's piece types (sentencepiece_model.proto), the same numbers as GGUF's token types
PIECE_NORMAL, PIECE_UNKNOWN, PIECE_BYTE = 1, 2, 6
SPACE = "\u2581"


def _varint2(buf: np.ndarray, pos: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Writes values < 2**14 as protobuf varints (1 or 2 bytes) at pos; returns their lengths."""
    two = value >= 128
    buf[pos] = np.where(two, (value & 0x7F) | 0x80, value)
    buf[pos[two] + 1] = value[two] >> 7
    return 1 + two


def serialize_model(pieces: Sequence[str], scores: np.ndarray, types: np.ndarray, byte_fallback: bool) -> bytes:
    """A serialized sentencepiece ModelProto (BPE, identity normalizer) with the given pieces.

    The repeated `pieces` field is written with numpy: 262,144 pieces through the protobuf API take ~0.2 s, this
    ~0.03 s.
    ModelProto.pieces = field 1; SentencePiece: piece = 1 (bytes), score = 2 (float32), type = 3 (enum)."""
    head = pb.ModelProto()
    head.trainer_spec.model_type = pb.TrainerSpec.BPE
    head.trainer_spec.vocab_size = len(pieces)
    head.trainer_spec.byte_fallback = byte_fallback
    norm = head.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = False
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = False

    enc = [p.encode("utf-8") for p in pieces]
    n = len(enc)
    lp = np.fromiter(map(len, enc), np.int64, n)
    if n and lp.max() > 16000:
        raise ValueError(f"token of {int(lp.max())} bytes is too long")
    vl = 1 + (lp >= 128)
    sub = 1 + vl + lp + 5 + 2           # piece (tag, length, bytes), score (tag, 4 bytes), type (tag, 1 byte)
    vs = 1 + (sub >= 128)
    entry = 1 + vs + sub
    start = np.zeros(n + 1, np.int64)
    np.cumsum(entry, out=start[1:])
    buf = np.empty(int(start[-1]), np.uint8)
    s = start[:-1]
    buf[s] = 0x0A                        # ModelProto.pieces, length-delimited
    _varint2(buf, s + 1, sub)
    p = s + 1 + vs
    buf[p] = 0x0A                        # SentencePiece.piece
    _varint2(buf, p + 1, lp)
    q = p + 1 + vl
    lp_start = np.zeros(n, np.int64)
    np.cumsum(lp[:-1], out=lp_start[1:])
    buf[np.repeat(q - lp_start, lp) + np.arange(int(lp.sum()))] = np.frombuffer(b"".join(enc), np.uint8)
    f = q + lp
    buf[f] = 0x15                        # SentencePiece.score, fixed32
    buf[f[:, None] + np.arange(1, 5)] = np.ascontiguousarray(scores, "<f4").view(np.uint8).reshape(n, 4)
    buf[f + 5] = 0x18                    # SentencePiece.type, varint
    buf[f + 6] = types
    return head.SerializeToString() + buf.tobytes()


def byte_piece(b: int) -> str:
    return f"<0x{b:02X}>"


def spm_merge(text: str, lookup: Callable[[str], int | None], score: Sequence[float], byte_ids: Sequence[int]) \
        -> list[int]:
    """llama.cpp's SPM merge of one (escaped) fragment, for the cases sentencepiece cannot do (see the module)."""
    sym = list(text)
    n = len(sym)
    nxt = [*range(1, n), -1]
    prev = list(range(-1, n - 1))
    heap: list[tuple[float, int, int, int]] = []

    def push(left: int, right: int) -> None:
        if left >= 0 and right >= 0:
            t = sym[left] + sym[right]
            tid = lookup(t)
            if tid is not None:
                heapq.heappush(heap, (-score[tid], left, right, len(t)))

    for i in range(1, n):
        push(i - 1, i)
    while heap:
        _, left, right, size = heapq.heappop(heap)
        if not sym[left] or not sym[right] or len(sym[left]) + len(sym[right]) != size:
            continue  # a stale pair: one side has merged since
        sym[left] += sym[right]
        sym[right] = ""
        nxt[left] = nxt[right]
        if nxt[right] >= 0:
            prev[nxt[right]] = left
        push(prev[left], left)
        push(left, nxt[left])
    out: list[int] = []
    i = 0 if n else -1
    while i != -1:
        tid = lookup(sym[i])
        if tid is not None:
            out.append(tid)
        else:
            out.extend(byte_ids[b] for b in sym[i].encode("utf-8"))
        i = nxt[i]
    return out


class SPMEncoder:
    """Encodes text fragments (no special tokens in them) to ids the way llama.cpp's SPM path does."""

    def __init__(self, tokens: list[str], scores: np.ndarray, is_byte: np.ndarray, unk_id: int,
                 add_space_prefix: bool):
        self.add_space_prefix = add_space_prefix
        self._tokens = tokens
        self._scores = scores
        types = np.full(len(tokens), PIECE_NORMAL, np.uint8)
        # byte tokens are looked up by their text as llama.cpp's byte_to_token does, among the BYTE-typed ones
        by_text = {tokens[i]: int(i) for i in np.flatnonzero(is_byte)}
        byte_ids = {b: by_text[byte_piece(b)] for b in range(256) if byte_piece(b) in by_text}
        byte_fallback = len(byte_ids) == 256
        if byte_fallback:
            types[list(byte_ids.values())] = PIECE_BYTE
        types[unk_id] = PIECE_UNKNOWN
        self._byte_ids = [byte_ids.get(b, unk_id) for b in range(256)]
        self._sp = spm.SentencePieceProcessor()
        self._sp.LoadFromSerializedProto(serialize_model(tokens, scores, types, byte_fallback))
        self._unk_id = unk_id
        # spellings of UNKNOWN / BYTE pieces that llama.cpp's merges can reach: sentencepiece would not
        special = [tokens[unk_id], *(tokens[i] for i in byte_ids.values())] if byte_fallback else [tokens[unk_id]]
        self._unmergeable = [t for t in special if self._reachable(t, {})]
        self._dict: dict[str, int] | None = None

    def token_id(self, text: str) -> int | None:
        """The id of the token spelled `text`, or None."""
        i = self._sp.piece_to_id(text)
        return i if i != self._unk_id or text == self._tokens[self._unk_id] else None

    def _reachable(self, text: str, memo: dict[str, bool]) -> bool:
        """Can llama.cpp's merges build the symbol `text`: a single character, or a token that is two such symbols
        joined? (Only decides which fragments go through spm_merge, which is exact.)"""
        if len(text) == 1:
            return True
        if text not in memo:
            memo[text] = False
            memo[text] = any(self._symbol(text[:k], memo) and self._symbol(text[k:], memo) for k in range(1, len(text)))
        return memo[text]

    def _symbol(self, text: str, memo: dict[str, bool]) -> bool:
        return len(text) == 1 or (self.token_id(text) is not None and self._reachable(text, memo))

    def _lookup(self, text: str) -> int | None:
        if self._dict is None:
            self._dict = {t: i for i, t in enumerate(self._tokens)}
        return self._dict.get(text)

    def encode(self, fragments: list[str], prev_special: list[bool]) -> list[list[int]]:
        texts = [((" " if self.add_space_prefix and ps else "") + f).replace(" ", SPACE)
                 for f, ps in zip(fragments, prev_special)]
        out = self._sp.encode(texts)
        if self._unmergeable:
            for k, t in enumerate(texts):
                if any(u in t for u in self._unmergeable):
                    out[k] = spm_merge(t, self._lookup, self._scores, self._byte_ids)
        return out
