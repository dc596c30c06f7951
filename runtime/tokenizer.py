"""Tokenizer built from GGUF metadata alone, giving llama.cpp's token ids (src/llama-vocab.cpp).

    tok = Tokenizer.from_metadata(gguf_file.metadata)
    ids = tok.encode("Hello", add_special=True, parse_special=False)
    text = tok.decode(ids)

Two vocabulary types: "gpt2" (byte-level BPE, kvant.runtime.tokenizer_bpe on `tokenizers`) and "llama"
(SentencePiece, kvant.runtime.tokenizer_spm on `sentencepiece`). What both share lives here, as llama.cpp does it:
token attributes from token types plus the end-of-generation tokens found by their text, splitting special tokens out
of the text before the model sees it (control and unknown tokens only when parse_special, user-defined ones always),
BOS / EOS, and detokenization (token_to_piece, detokenize).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from gguf import Keys

from .pretokenize import PRE_TOKENIZERS

K = Keys.Tokenizer


def check_text(text) -> None:
    """Text to tokenize is a str of Unicode characters that UTF-8 can hold: a command-line argument or a file with
    bytes that are not UTF-8 arrives as lone surrogates (Python's surrogateescape), and so can a JSON string."""
    if not isinstance(text, str):
        raise TypeError(f"text to tokenize must be a str, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"the text is not valid UTF-8 ({text[e.start]!r} is not a character)") from None


class TokenizerError(ValueError):
    """The metadata does not describe a tokenizer kvant can build."""


class Attr(enum.IntFlag):
    """llama_token_attr."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8


# GGUF token type (gguf.TokenType: 1 normal .. 6 byte; 0 and anything else undefined) -> attribute
_TYPE_ATTR = np.array([Attr.UNDEFINED, Attr.NORMAL, Attr.UNKNOWN, Attr.CONTROL, Attr.USER_DEFINED, Attr.UNUSED,
                       Attr.BYTE, Attr.UNDEFINED], np.uint16)
_SPECIAL = Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN
_HIDDEN = Attr.CONTROL | Attr.UNKNOWN  # not rendered by token_to_piece(special=False), not split unless parse_special

# Token texts llama.cpp recognizes when the metadata does not name them (llama_vocab::impl::load). Each found token
# becomes a control token; the first of a role found (here: lowest id) takes the role.
ROLE_TEXTS = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
            "_<EOT>", "[EOT]", "<\uff5cend\u2581of\u2581sentence\uff5c>", "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uff5cfim\u2581begin\uff5c>", "<PRE>",
                "\u2581<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\uff5cfim\u2581hole\uff5c>", "<SUF>",
                "\u2581<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\uff5cfim\u2581end\uff5c>", "<MID>",
                "\u2581<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
# every token with one of these texts ends generation (and becomes a control token)
EOG_TEXTS = frozenset(("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
                       "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
                       "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
                       "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~["))
# gpt-oss: always rendered, matched in text like user-defined tokens
ALWAYS_USER_DEFINED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")
# metadata key of each special role
ROLE_KEYS = {"bos": (K.BOS_ID,), "eos": (K.EOS_ID,), "eot": (K.EOT_ID,), "eom": (K.EOM_ID,), "unk": (K.UNK_ID,),
             "sep": (K.SEP_ID,), "pad": (K.PAD_ID,), "mask": (K.MASK_ID,), "fim_pre": (K.FIM_PRE_ID, K.PREFIX_ID),
             "fim_suf": (K.FIM_SUF_ID, K.SUFFIX_ID), "fim_mid": (K.FIM_MID_ID, K.MIDDLE_ID),
             "fim_pad": (K.FIM_PAD_ID,), "fim_rep": (K.FIM_REP_ID,), "fim_sep": (K.FIM_SEP_ID,)}
# tokenizer.ggml.model -> default ids and flags before the metadata overrides them
MODEL_DEFAULTS = {
    "llama": {"ids": {"bos": 1, "eos": 2, "unk": 0}, "add_bos": True, "add_space_prefix": True},
    "gpt2": {"ids": {"bos": 11, "eos": 11}, "add_bos": False, "add_space_prefix": False},
}
_C_SPACE = " \t\n\v\f\r"  # C isspace in the "C" locale


class Tokenizer:
    """Text <-> token ids with llama.cpp's results. Build with Tokenizer.from_metadata(metadata)."""

    def __init__(self, tokens: list[str], attrs: np.ndarray, encoder: Any, model: str, ids: dict[str, int | None],
                 eog: Iterable[int], add_bos: bool, add_eos: bool, add_space_prefix: bool, clean_spaces: bool):
        self.tokens = tokens
        self.model = model
        self._attr = attrs
        self._encoder = encoder
        self.ids = ids
        self.bos_id = ids.get("bos")
        self.eos_id = ids.get("eos")
        self.eot_ids = tuple(sorted(set(eog)))
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.add_space_prefix = add_space_prefix
        self.clean_spaces = clean_spaces
        self.n_vocab = len(tokens)
        if add_bos and self.bos_id is None:
            raise TokenizerError("the tokenizer adds a BOS token but has none")
        if add_eos and self.eos_id is None:
            raise TokenizerError("the tokenizer adds an EOS token but has none")
        self._matchers: dict[bool, _Matcher] = {}
        self._pieces: dict[bool, dict[int, bytes]] = {True: {}, False: {}}

    # ---- construction ----

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> Tokenizer:
        """Build from a GGUF metadata dict (str, int, float, bool; list[str] for string arrays; numpy arrays for
        numeric arrays). Raises TokenizerError on a missing or unsupported tokenizer."""
        model = metadata.get(K.MODEL)
        if model is None:
            raise TokenizerError(f"no tokenizer in the file ({K.MODEL} missing)")
        if model not in MODEL_DEFAULTS:
            raise TokenizerError(f"tokenizer model {model!r} is not supported (supported: gpt2, llama)")
        tokens = metadata.get(K.LIST)
        if not tokens:
            raise TokenizerError(f"no token list ({K.LIST}) in the file")
        n = len(tokens)
        if "" in tokens:  # llama.cpp renames empty tokens
            tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        types = metadata.get(K.TOKEN_TYPE)
        if types is None:
            attrs = np.full(n, Attr.NORMAL, np.uint16)
        else:
            types = np.asarray(types)
            if len(types) < n:
                raise TokenizerError(f"{K.TOKEN_TYPE} has {len(types)} entries for {n} tokens")
            types = types[:n]
            attrs = _TYPE_ATTR[np.where((types >= 0) & (types < len(_TYPE_ATTR)), types, 0)]
        defaults = MODEL_DEFAULTS[model]
        ids = _special_ids(metadata, n, defaults["ids"])
        if model == "gpt2":
            encoder, pre = _bpe_encoder(metadata, tokens)
            if not pre.has_bos:  # no default BOS; one named in the metadata still counts
                ids["bos"] = _special_ids(metadata, n, {})["bos"]
            add_bos_default, add_space_prefix, clean_spaces = pre.add_bos, False, pre.clean_spaces
        else:
            add_bos_default, clean_spaces = defaults["add_bos"], False
            add_space_prefix = bool(metadata.get(K.ADD_PREFIX, defaults["add_space_prefix"]))
            encoder = _spm_encoder(metadata, tokens, attrs, ids, add_space_prefix)
        add_bos = bool(metadata.get(K.ADD_BOS, add_bos_default))
        add_eos = bool(metadata.get(K.ADD_EOS, False))

        eog = _find_roles_and_eog(encoder.token_id, attrs, ids)
        name = str(metadata.get("general.name", "")).lower()
        if "phi-3" in name or "phi3" in name:
            _phi3_rstrip(encoder.token_id, attrs)
        return cls(tokens, attrs, encoder, model, ids, eog, add_bos, add_eos, add_space_prefix, clean_spaces)

    # ---- encoding ----

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`, as llama_tokenize(text, add_special, parse_special).

        add_special adds BOS / EOS where the model asks for them (add_bos / add_eos); parse_special turns the text
        of control tokens (e.g. "<|im_start|>") into those tokens. User-defined tokens are always matched."""
        check_text(text)
        parts = self._split_special(text, parse_special) if text else []
        raw = [p for p in parts if isinstance(p, str)]
        prev_special = [k == 0 or not isinstance(parts[k - 1], str) for k, p in enumerate(parts) if isinstance(p, str)]
        encoded = iter(self._encoder.encode(raw, prev_special) if raw else ())
        out = [self.bos_id] if add_special and self.add_bos else []
        for p in parts:
            if isinstance(p, str):
                out.extend(next(encoded))
            else:
                out.append(p)
        if add_special and self.add_eos:
            out.append(self.eos_id)
        return out

    def _split_special(self, text: str, parse_special: bool) -> list[str | int]:
        """llama.cpp's tokenizer_st_partition: each special token, longest first, splits every remaining piece of
        text at its occurrences (leftmost first, not overlapping)."""
        matcher = self._matchers.get(parse_special)
        if matcher is None:
            # special tokens in llama.cpp's order: longest (in bytes) first; ties by id (llama.cpp's sort is unstable).
            # Masks as plain ints, in numpy: IntFlag arithmetic per token took 45 ms on gemma-3's 6,414.
            ids = np.flatnonzero(self._attr & int(_SPECIAL))
            if not parse_special:
                ids = ids[(self._attr[ids] & int(_HIDDEN)) == 0]
            special = sorted(((self.tokens[i], int(i), int(a)) for i, a in zip(ids, self._attr[ids])),
                             key=lambda t: (-len(t[0].encode()), t[1]))
            matcher = self._matchers[parse_special] = _Matcher(special)
        parts: list[str | int] = [text]
        for tok_text, tid, attr in matcher.present(text):
            out: list[str | int] = []
            for p in parts:
                if not isinstance(p, str) or tok_text not in p:
                    out.append(p)
                    continue
                pieces = p.split(tok_text)
                for k, piece in enumerate(pieces):
                    if k > 0:
                        out.append(tid)
                        if attr & Attr.RSTRIP:
                            piece = piece.lstrip(_C_SPACE)
                    if k < len(pieces) - 1 and attr & Attr.LSTRIP:
                        piece = piece.rstrip(_C_SPACE)
                    if piece:
                        out.append(piece)
            parts = out
        return parts

    # ---- decoding ----

    def token_bytes(self, token_id: int, special: bool = True) -> bytes:
        """Raw bytes of one token, as llama_token_to_piece(id, lstrip=0, special): a byte token is its byte, U+2581
        is a space (SentencePiece), the GPT-2 byte map is undone (BPE); control and unknown tokens are their text
        when special, else nothing. Bytes may end inside a UTF-8 character: join before decoding."""
        cache = self._pieces[special]
        piece = cache.get(token_id)
        if piece is None:
            piece = cache[token_id] = self._piece(token_id, special)
        return piece

    def check_ids(self, ids) -> None:
        """Every id names a token of this vocabulary (a ValueError names the first that does not)."""
        bad = next((t for t in ids if not 0 <= t < self.n_vocab), None)
        if bad is not None:
            raise ValueError(f"token id {bad} is outside the vocabulary (0..{self.n_vocab - 1})")

    def _piece(self, token_id: int, special: bool) -> bytes:
        if not 0 <= token_id < self.n_vocab:
            raise IndexError(f"token id {token_id} out of range (vocabulary of {self.n_vocab})")
        attr = int(self._attr[token_id])
        text = self.tokens[token_id]
        if attr & _HIDDEN and not special:
            return b""
        if attr & (_HIDDEN | Attr.USER_DEFINED):
            return text.encode()
        if attr & Attr.NORMAL:
            if self.model == "llama":
                return text.replace("\u2581", " ").encode()
            from .tokenizer_bpe import decode_byte_level
            return decode_byte_level(text)
        if attr & Attr.BYTE:
            return bytes((int(text[3:5], 16),))
        return b""

    def decode_bytes(self, ids: Iterable[int], special: bool = True, remove_special: bool = False) -> bytes:
        """llama_detokenize(ids, remove_special, unparse_special=special): pieces joined; the leading space a
        SentencePiece prefix added is removed; remove_special drops a leading BOS / trailing EOS the model adds."""
        ids = list(ids)
        remove_space = self.add_space_prefix
        if remove_special and self.add_bos and ids and ids[0] == self.bos_id:
            remove_space = False
            ids = ids[1:]
        if remove_special and self.add_eos and ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        pieces = [self.token_bytes(t, special) for t in ids]
        if remove_space and pieces and pieces[0][:1] == b" ":
            pieces[0] = pieces[0][1:]
        text = b"".join(pieces)
        return _clean_spaces(text) if self.clean_spaces else text

    def decode(self, ids: Iterable[int], special: bool = True, remove_special: bool = False) -> str:
        """Text of `ids` (see decode_bytes); bytes that are not UTF-8 become U+FFFD."""
        return self.decode_bytes(ids, special, remove_special).decode("utf-8", errors="replace")

    # ---- attributes ----

    def is_eog(self, token_id: int) -> bool:
        """True for tokens that end generation (EOS, end-of-turn and the like)."""
        return token_id in self.eot_ids

    def is_control(self, token_id: int) -> bool:
        return bool(self._attr[token_id] & Attr.CONTROL)

    def __len__(self) -> int:
        return self.n_vocab

    def __repr__(self) -> str:
        return (f"Tokenizer({self.model}, {self.n_vocab} tokens, bos={self.bos_id}, eos={self.eos_id}, "
                f"eot_ids={self.eot_ids}, add_bos={self.add_bos})")


class _Matcher:
    """Finds which special tokens occur in a text without testing each of thousands of them against it: tokens are
    grouped by their first three characters and a group is looked at only when its prefix occurs."""

    def __init__(self, special: list[tuple[str, int, int]]):
        self._groups: dict[str, list[int]] = {}
        for k, (t, _, _) in enumerate(special):
            self._groups.setdefault(t[:3], []).append(k)
        self._special = special

    def present(self, text: str) -> list[tuple[str, int, int]]:
        hits = [k for prefix, group in self._groups.items() if prefix in text
                for k in group if self._special[k][0] in text]
        return [self._special[k] for k in sorted(hits)]


def _bpe_encoder(metadata: Mapping[str, Any], tokens: list[str]):
    from .tokenizer_bpe import BPEEncoder
    pre_name = metadata.get(K.PRE) or "default"
    pre = PRE_TOKENIZERS.get(pre_name)
    if pre is None:
        raise TokenizerError(f"BPE pre-tokenizer {pre_name!r} ({K.PRE}) is not supported")
    merges = metadata.get(K.MERGES)
    if merges is None:
        raise TokenizerError(f"no merges ({K.MERGES}) in the file")
    return BPEEncoder(tokens, merges, pre), pre


def _spm_encoder(metadata: Mapping[str, Any], tokens: list[str], attrs: np.ndarray, ids: dict[str, int | None],
                 add_space_prefix: bool):
    from .tokenizer_spm import SPMEncoder
    n = len(tokens)
    scores = metadata.get(K.SCORES)
    scores = np.zeros(n, np.float32) if scores is None else np.asarray(scores, np.float32)
    if len(scores) < n:
        raise TokenizerError(f"{K.SCORES} has {len(scores)} entries for {n} tokens")
    if ids.get("unk") is None:
        raise TokenizerError("a SentencePiece vocabulary needs an unknown token")
    try:
        return SPMEncoder(tokens, scores[:n], (attrs & Attr.BYTE) != 0, ids["unk"], add_space_prefix)
    except RuntimeError as e:  # sentencepiece refuses the model, e.g. a repeated token text
        raise TokenizerError(f"bad SentencePiece vocabulary: {e}") from None


def _special_ids(metadata: Mapping[str, Any], n: int, defaults: dict[str, int]) -> dict[str, int | None]:
    """Special ids from the metadata over the model's defaults; out-of-range values are ignored, as llama.cpp does."""
    ids: dict[str, int | None] = {}
    for role, keys in ROLE_KEYS.items():
        value = defaults.get(role)
        if value is not None and value >= n:
            value = None
        for key in keys:
            v = metadata.get(key)
            if v is not None and 0 <= int(v) < n:
                value = int(v)
        ids[role] = value
    return ids


def _find_roles_and_eog(token_id: Callable[[str], int | None], attrs: np.ndarray, ids: dict[str, int | None]) \
        -> set[int]:
    """llama.cpp's text rules: fills unset roles (eot, eom, fim_*), marks the found tokens as control, returns the
    set of end-of-generation ids. Updates ids and attrs in place."""
    wanted = set(EOG_TEXTS).union(ALWAYS_USER_DEFINED, *ROLE_TEXTS.values())
    found = {t: i for t in wanted if (i := token_id(t)) is not None}
    for role, texts in ROLE_TEXTS.items():
        hits = [found[t] for t in texts if t in found]
        if ids[role] is None and hits:
            ids[role] = min(hits)
            attrs[ids[role]] |= Attr.CONTROL
    eog = {ids[r] for r in ("fim_pad", "fim_rep", "fim_sep") if ids[r] is not None}
    for t in EOG_TEXTS & found.keys():
        eog.add(found[t])
        attrs[found[t]] |= Attr.CONTROL
    for t in ALWAYS_USER_DEFINED:
        if t in found:
            attrs[found[t]] = Attr.USER_DEFINED
    eog.update(ids[r] for r in ("eos", "eot", "eom") if ids[r] is not None)
    texts = {t: i for t, i in found.items() if i in eog}
    # o200k_harmony / solar-open: "<|end|>" ends a message, not generation
    if "<|end|>" in texts and any(pair <= texts.keys() for pair in ({"<|return|>", "<|call|>"},
                                                                  {"<|calls|>", "<|flush|>"})):
        eog.discard(texts["<|end|>"])
        attrs[texts["<|end|>"]] = Attr.USER_DEFINED
    # gemma4 / plamo2 have a normal "</s>"
    if "</s>" in texts and ("<|tool_response>" in texts or "<|plamo:eos|>" in texts):
        eog.discard(texts["</s>"])
        attrs[texts["</s>"]] = Attr.NORMAL
    return eog


def _phi3_rstrip(token_id: Callable[[str], int | None], attrs: np.ndarray) -> None:
    """llama.cpp strips the whitespace after Phi-3's special tokens (but <unk>, <s>, <|endoftext|>)."""
    attrs[np.flatnonzero(attrs & _SPECIAL)] |= np.uint16(Attr.RSTRIP)
    for t, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
        if (i := token_id(t)) is not None:
            attrs[i] = attrs[i] | Attr.RSTRIP if on else attrs[i] & ~np.uint16(Attr.RSTRIP)


def _clean_spaces(text: bytes) -> bytes:
    """llama_detokenize's clean_up_tokenization_spaces, three in-place passes over the bytes as written in C."""
    t = bytearray(text)
    sp, q = ord(" "), ord("'")
    # 1: drop the space before ? ! . ,
    n, total = len(t), 1 if t else 0
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == sp and x in b"?!.,":
            total -= 1
        t[total] = x
        total += 1
    # 2: " ' " -> "'"
    n, total, i = total, 1 if total else 0, 1
    while i < n:
        x = t[i]
        if x == q and i + 1 < n and t[i - 1] == sp and t[i + 1] == sp:
            total -= 1
            i += 1
            t[i] = 0
        t[total] = x
        total += 1
        i += 1
    # 3: " 's", " 'm", " 're", " 've" -> without the space
    n, total = total, 1 if total else 0
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == sp and x == q and i + 1 < n:
            x1 = t[i + 1]
            if x1 in b"sm":
                total -= 1
            elif i + 2 < n and (x1, t[i + 2]) in ((ord("r"), ord("e")), (ord("v"), ord("e"))):
                total -= 1
        t[total] = x
        total += 1
    return bytes(t[:total])
