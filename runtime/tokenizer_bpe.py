"""Byte-level BPE ("gpt2" tokenizers in GGUF) on the `tokenizers` library.

llama.cpp (llm_tokenizer_bpe_session) splits each text fragment with the pre-tokenizer's regexes, maps every byte of
a piece to its GPT-2 stand-in character, and merges adjacent symbols by lowest merge rank (ties: leftmost). A
tokenizers BPE model built from the GGUF vocab and merges, behind Split(regex, "isolated") pre-tokenizers and a
ByteLevel step without its own regex, does the same; `ignore_merges` takes a piece that is a whole token as is.
"""

from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from .pretokenize import PreTokenizer, onig_regex


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table: printable Latin-1 bytes stand for themselves, the other 68 bytes
    take the code points from U+0100 on, in byte order."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = [""] * 256
    extra = 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


BYTE_TO_CHAR = _gpt2_byte_chars()
_GAP = "\x00"  # never a byte-level text: byte 0 is written U+0100
CHAR_TO_BYTE = {c: b for b, c in enumerate(BYTE_TO_CHAR)}


def decode_byte_level(text: str) -> bytes:
    """A normal BPE token's text -> its raw bytes. A character outside the GPT-2 table becomes the marker
    llama.cpp's llama_decode_text writes for it: "[UNK_BYTE_0x<its utf-8 in hex><the whole text>]"."""
    out = bytearray()
    for c in text:
        b = CHAR_TO_BYTE.get(c)
        if b is None:
            out += b"[UNK_BYTE_0x" + c.encode().hex().encode() + text.encode() + b"]"
        else:
            out.append(b)
    return bytes(out)


def _checked_pairs(vocab: dict[str, int], merges: list[str]) -> list[tuple[str, str]]:
    """Merges as llama.cpp reads them, without repeats and without those tokenizers refuses."""
    pairs = []
    seen = set()
    for m in merges:
        pos = m.find(" ", 1)
        pair = (m[:pos], m[pos + 1:]) if pos > 0 else ("", "")
        if pair in seen or pair[0] not in vocab or pair[1] not in vocab or pair[0] + pair[1] not in vocab:
            continue
        seen.add(pair)
        pairs.append(pair)
    return pairs


def build_bpe(vocab: dict[str, int], merges: list[str], pre: PreTokenizer, unk_token: str | None = None) \
        -> Tokenizer:
    """The tokenizers pipeline for one GGUF vocabulary (no normalizer, no added tokens: special tokens are split
    off before, by kvant.runtime.tokenizer)."""
    # llama.cpp splits a merge at the first space after position 0 and keeps the first rank of a repeated pair;
    # tokenizers would keep the last one and refuses a merge whose parts or result are not tokens (llama.cpp would
    # spell such a result with byte tokens later). The plain split is right for every ordinary vocabulary.
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    if len(set(merges)) != len(merges) or any(m[:1] == " " for m in merges):
        pairs = _checked_pairs(vocab, merges)
    try:
        model = models.BPE(vocab, pairs, ignore_merges=pre.ignore_merges, unk_token=unk_token)
    except Exception:  # tokenizers raises a bare Exception for a merge outside the vocabulary
        model = models.BPE(vocab, _checked_pairs(vocab, merges), ignore_merges=pre.ignore_merges, unk_token=unk_token)
    tok = Tokenizer(model)
    splits = [pre_tokenizers.Split(Regex(onig_regex(r)), behavior="isolated") for r in pre.regexes]
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok


class BPEEncoder:
    """Encodes text fragments (no special tokens in them) to ids."""

    def __init__(self, tokens: list[str], merges: list[str], pre: PreTokenizer):
        self._vocab = dict(zip(tokens, range(len(tokens))))  # a repeated text maps to its last id, as in llama.cpp
        self.token_id = self._vocab.get
        self._gap_id = None
        if all(c in self._vocab for c in BYTE_TO_CHAR):
            self._tok = build_bpe(self._vocab, merges, pre)
        else:
            # A byte character outside the vocabulary stays a symbol in llama.cpp: nothing merges across it, and it
            # is dropped at the end. tokenizers drops it first (and merges its neighbours), unless it becomes an
            # unknown token: one with an id past the vocabulary, removed from the output.
            self._gap_id = len(tokens)
            self._tok = build_bpe({**self._vocab, _GAP: self._gap_id}, merges, pre, unk_token=_GAP)

    def encode(self, fragments: list[str], prev_special: list[bool]) -> list[list[int]]:
        """prev_special (whether a special token came before each fragment) matters to SentencePiece only."""
        if len(fragments) == 1:
            out = [self._tok.encode(fragments[0], add_special_tokens=False).ids]
        else:
            out = [e.ids for e in self._tok.encode_batch(fragments, add_special_tokens=False)]
        if self._gap_id is not None:
            out = [[i for i in ids if i != self._gap_id] for ids in out]
        return out
