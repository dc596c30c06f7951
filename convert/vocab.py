"""Tokenizers into llama.cpp's tokenizer.ggml.* keys, as llama.cpp's converter writes them.

Two kinds:
  gpt2  byte-level BPE from tokenizer.json: tokens, token types, merges, and the pre-tokenizer name (by llama.cpp's
        check-string hash, else by the pre_tokenizer's structure: kvant.convert.pretokenizers);
  llama SentencePiece from tokenizer.model: pieces, scores, token types (the sentencepiece model proto via
        sentencepiece's own reader), plus added_tokens.json and tokenizer_config.json's added_tokens_decoder.
Then the special tokens, add_bos/add_eos, the chat template and normaliser flags (llama.cpp's SpecialVocab rules:
tokenizer_config.json and tokenizer.json's post-processor first, config.json's *_token_id after).

Everything is written through a gguf.GGUFWriter used as a typed key-value collector, so each key gets the GGUF type
llama.cpp's converter gives it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from gguf import TokenType

from .hf import HFModel, ModelDirError
from .pretokenizers import CHECK_TEXT, HASHES, check_hash, pre_from_structure, structure

SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
# llama.cpp's keys for BERT-style normalisers (newer than the gguf package's Keys)
NORMALIZER_LOWERCASE = "tokenizer.ggml.normalizer.lowercase"
NORMALIZER_STRIP_ACCENTS = "tokenizer.ggml.normalizer.strip_accents"


class VocabError(ModelDirError):
    """A tokenizer kvant cannot convert (one readable sentence)."""


def looks_special(token: str) -> bool:
    """llama.cpp's does_token_look_special: added tokens that should be control tokens even when not marked."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<｜") and token.endswith("｜>"))
            or (token.startswith("<unused") and token.endswith(">")))


# ---------------------------------------------------------------- byte-level BPE (tokenizer.ggml.model = gpt2)
def is_byte_level(tj: dict) -> bool:
    def has_byte_level(node) -> bool:
        if not isinstance(node, dict):
            return False
        if node.get("type") == "ByteLevel":
            return True
        return any(has_byte_level(n) for key in ("pretokenizers", "decoders") for n in node.get(key, []))
    return has_byte_level(tj.get("pre_tokenizer")) or has_byte_level(tj.get("decoder"))


def bpe_pre_name(model: HFModel) -> str:
    """tokenizer.ggml.pre: llama.cpp's hash table first, the tokenizer's structure second."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(model.file("tokenizer.json"))
    digest = check_hash(tok.encode(CHECK_TEXT).ids)
    name = HASHES.get(digest) or pre_from_structure(model.tokenizer_json)
    if name is None:
        raise VocabError(f"unrecognised BPE pre-tokenizer: llama.cpp does not know its hash {digest[:16]}... and its "
                         f"structure {list(structure(model.tokenizer_json))} matches no known one")
    return name


def bpe_tokens(model: HFModel) -> tuple[list[str], list[int]]:
    """get_vocab_base: one token per id below vocab_size, [PADn] for holes; added tokens CONTROL when special."""
    tj = model.tokenizer_json
    vocab = dict(tj["model"]["vocab"])
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    for a in added.values():
        vocab[a["content"]] = a["id"]
    reverse = {i: t for t, i in vocab.items()}
    n_vocab = int(model.config.get("vocab_size", len(reverse)))
    if reverse and max(reverse) >= n_vocab:
        raise VocabError(f"tokenizer.json has token id {max(reverse)} but the model's vocab_size is {n_vocab}")
    added_contents = {a["content"] for a in added.values()}
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        token = reverse[i]
        if token in added_contents:
            if added.get(i, {}).get("special") or looks_special(token):
                types.append(TokenType.CONTROL)
            else:
                token = token.replace("\u2581", " ")  # pre-normalise user-defined spaces (llama.cpp does, for Gemma)
                types.append(TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
        tokens.append(token)
    return tokens, [int(t) for t in types]


def write_gpt2(w, model: HFModel) -> None:
    tj = model.tokenizer_json
    if tj.get("model", {}).get("type") != "BPE":
        raise VocabError(f"tokenizer.json holds a {tj.get('model', {}).get('type')} model; kvant converts BPE "
                         f"tokenizers and SentencePiece tokenizer.model files")
    if not is_byte_level(tj):
        raise VocabError("tokenizer.json is a SentencePiece-style BPE (no byte-level step) and there is no "
                         "tokenizer.model; this kind of tokenizer is not supported yet")
    tokens, types = bpe_tokens(model)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(bpe_pre_name(model))
    w.add_token_list(tokens)
    w.add_token_types(types)
    special_vocab(model, load_merges=True).write(w)


# ---------------------------------------------------------------- SentencePiece (tokenizer.ggml.model = llama)
def spm_tokens(model: HFModel) -> tuple[list[bytes], list[float], list[int]]:
    """_create_vocab_sentencepiece: pieces, scores and types of tokenizer.model, padded to vocab_size."""
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(model.spm_path)
    except (OSError, RuntimeError) as e:
        raise VocabError(f"cannot read tokenizer.model: {e}") from None
    n_vocab = int(model.config.get("vocab_size_per_layer_input") or model.config.get("vocab_size") or sp.vocab_size())
    tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [int(TokenType.UNUSED)] * n_vocab
    for i in range(min(sp.vocab_size(), n_vocab)):
        if sp.IsUnknown(i):
            t = TokenType.UNKNOWN
        elif sp.IsControl(i):
            t = TokenType.CONTROL
        elif sp.IsUnused(i):
            t = TokenType.UNUSED
        elif sp.IsByte(i):
            t = TokenType.BYTE
        else:
            t = TokenType.NORMAL
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode("utf-8"), sp.GetScore(i), int(t)
    added_path = model.file("added_tokens.json")
    if os.path.isfile(added_path):
        with open(added_path, encoding="utf-8") as f:
            for text, i in json.load(f).items():
                if i < n_vocab:
                    tokens[i], scores[i], types[i] = text.encode("utf-8"), -1000.0, int(TokenType.USER_DEFINED)
    for key, data in (model.tokenizer_config or {}).get("added_tokens_decoder", {}).items():
        i, text = int(key), data["content"]
        if i >= n_vocab:
            continue
        if data.get("special") or looks_special(text):
            types[i] = int(TokenType.CONTROL)
        else:
            text = text.replace("\u2581", " ")
            types[i] = int(TokenType.USER_DEFINED)
        scores[i], tokens[i] = -1000.0, text.encode("utf-8")
    return tokens, scores, types


def write_spm(w, model: HFModel) -> None:
    tokens, scores, types = spm_tokens(model)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    special_vocab(model, n_vocab=len(tokens)).write(w)


# ---------------------------------------------------------------- special tokens, add_*_token, chat template
@dataclass
class SpecialVocab:
    merges: list[str] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)  # insertion order is the order llama.cpp writes them in
    add: dict[str, bool] = field(default_factory=dict)
    chat_template: str | list | None = None
    lowercase: bool | None = None
    strip_accents: bool | None = None

    def write(self, w) -> None:
        if self.merges:
            w.add_token_merges(self.merges)
        for typ, tid in self.ids.items():
            getattr(w, f"add_{typ}_token_id")(tid)
        for typ, value in self.add.items():
            adder = getattr(w, f"add_add_{typ}_token", None)
            if adder is not None:
                adder(value)
        if self.chat_template is not None:
            w.add_chat_template(self.chat_template)
        if self.lowercase is not None:
            w.add_bool(NORMALIZER_LOWERCASE, self.lowercase)
        if self.strip_accents is not None:
            w.add_bool(NORMALIZER_STRIP_ACCENTS, self.strip_accents)


def _merges(tj: dict) -> list[str]:
    merges = tj.get("model", {}).get("merges")
    if not merges:
        return []
    if isinstance(merges[0], str):
        return list(merges)
    # [a, b] pairs (transformers >= 4.45): joined by a space, spaces inside a part written as U+0120 as llama.cpp does
    return [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
            for pair in merges]


def _normalizer(sv: SpecialVocab, node: dict) -> None:
    kind = node.get("type")
    if kind == "Lowercase":
        sv.lowercase = True
    elif kind == "StripAccents":
        sv.strip_accents = True
    elif kind == "BertNormalizer":
        if "lowercase" in node:
            sv.lowercase = node["lowercase"]
        if "strip_accents" in node:
            sv.strip_accents = node["strip_accents"]
    elif kind == "Sequence":
        for n in node.get("normalizers", []):
            _normalizer(sv, n)


def _token_id(entry) -> str | None:
    return entry.get("SpecialToken", {}).get("id") if isinstance(entry, dict) else None


def special_vocab(model: HFModel, n_vocab: int | None = None, load_merges: bool = False) -> SpecialVocab:
    """llama.cpp's gguf.SpecialVocab, restated: what it reads and in which order it lets a source win."""
    sv = SpecialVocab()
    types = list(SPECIAL_TYPES)
    tj = model.tokenizer_json
    tc = dict(model.tokenizer_config) if model.tokenizer_config is not None else None

    def set_id(typ: str, tid) -> None:
        if not isinstance(tid, int) or isinstance(tid, bool):
            return
        if tid < 0:
            raise VocabError(f"invalid id {tid} for the {typ} token")
        if (n_vocab is None or tid < n_vocab) and typ not in sv.ids:
            sv.ids[typ] = tid

    added_tokens = []
    if tj is not None:
        if load_merges:
            sv.merges = _merges(tj)
        if tj.get("normalizer"):
            _normalizer(sv, tj["normalizer"])
        added_tokens = tj.get("added_tokens", [])
        _post_processor(sv, tj.get("post_processor"), tc, types)
    if not tc:
        _config_ids(model, types, set_id)
        return sv
    sv.chat_template = chat_template(model, tc)
    for typ in types:
        flag = tc.get(f"add_{typ}_token")
        if isinstance(flag, bool) and typ not in sv.add:
            sv.add[typ] = flag
        entry = tc.get(f"{typ}_token")
        content = entry.get("content") if isinstance(entry, dict) else entry
        if not isinstance(content, str):
            continue
        set_id(typ, next((a.get("id") for a in added_tokens if a.get("content") == content), None))
    _config_ids(model, types, set_id)
    return sv


def _config_ids(model: HFModel, types, set_id) -> None:
    for typ in types:
        tid = model.config.get(f"{typ}_token_id")
        set_id(typ, tid)


def _post_processor(sv: SpecialVocab, post, tc: dict | None, types: list[str]) -> None:
    """What tokenizer.json's post-processor says about adding BOS / EOS / SEP (llama.cpp's crude reading of it)."""
    if not post:
        return
    tc_get = (tc or {}).get
    bos, cls, eos, sep = tc_get("bos_token"), tc_get("cls_token"), tc_get("eos_token"), tc_get("sep_token")
    if not bos and cls and tc:
        tc["bos_token"] = bos = cls
    if not eos and sep and tc:
        tc["eos_token"] = eos = sep
    for proc in post.get("processors", [post]):
        kind = proc.get("type")
        if kind == "ByteLevel":
            sv.add.setdefault("bos", False)
            sv.add.setdefault("eos", False)
        elif kind == "RobertaProcessing":
            sv.add.update(bos=True, eos=True, sep=True)
            if not cls and tc:
                tc["cls_token"] = cls = proc.get("cls", [bos])[0]
            if not sep and tc:
                tc["sep_token"] = sep = proc.get("sep", [eos])[0]
        elif kind == "TemplateProcessing":
            single, pair = proc.get("single", []), proc.get("pair", [])
            first = last = None
            if len(single) > 1:
                first = _token_id(single[0])
                if first:
                    if not tc:
                        bos = first
                    elif first not in (bos, cls):
                        if not bos:
                            tc["bos_token"] = bos = first
                        if not cls:
                            tc["cls_token"] = cls = first
                    sv.add["bos"] = first in (bos, cls)
                last = _token_id(single[-1])
                if last:
                    if not tc:
                        eos = last
                    elif last != eos:
                        if "eot" not in types:
                            types.append("eot")
                            tc["eot_token"] = eos
                        elif "eom" not in types:
                            types.append("eom")
                            tc["eom_token"] = eos
                        tc["eos_token"] = eos = last
                    sv.add["eos"] = last == eos
            if pair:
                start = 1 if first and _token_id(pair[0]) == first else 0
                stop = -1 if last and _token_id(pair[-1]) == last else None
                middle = pair[start:stop]
                if middle:
                    a = middle[0].get("Sequence", {}).get("id") if isinstance(middle[0], dict) else None
                    b = middle[-1].get("Sequence", {}).get("id") if isinstance(middle[-1], dict) else None
                    if a == "A" and b == "B" and (middle := middle[1:-1]):
                        add_sep = False
                        entry = _token_id(middle[0])
                        if entry and entry in (sep, eos) and not last:
                            add_sep = True
                        if len(middle) == 2:
                            entry = _token_id(middle[1])
                            if entry and entry in (sep, eos):
                                add_sep = True
                        sv.add["sep"] = add_sep
                        if add_sep and not sep and tc:
                            tc["sep_token"] = eos


def chat_template(model: HFModel, tc: dict):
    """tokenizer_config.json's chat_template, else chat_template.jinja (with additional_chat_templates/*.jinja as
    named templates), else chat_template.json."""
    alt = None
    jinja, js = model.file("chat_template.jinja"), model.file("chat_template.json")
    if os.path.isfile(jinja):
        with open(jinja, encoding="utf-8") as f:
            alt = f.read()
        extra_dir = model.file("additional_chat_templates")
        extra = sorted(p for p in os.listdir(extra_dir) if p.endswith(".jinja")) if os.path.isdir(extra_dir) else []
        if extra:
            alt = [{"name": "default", "template": alt}]
            for p in extra:
                with open(os.path.join(extra_dir, p), encoding="utf-8") as f:
                    alt.append({"name": p[:-len(".jinja")], "template": f.read()})
    elif os.path.isfile(js):
        with open(js, encoding="utf-8") as f:
            alt = json.load(f).get("chat_template")
    template = tc.get("chat_template", alt)
    return template if template is None or isinstance(template, (str, list)) else None


# ---------------------------------------------------------------- choosing and writing
def write_vocab(w, model: HFModel, kinds: tuple[str, ...]) -> str:
    """Write the first tokenizer kind in `kinds` that the directory has files for; returns the kind written."""
    for kind in kinds:
        if kind == "llama" and model.spm_path:
            write_spm(w, model)
            return kind
        if kind == "gpt2" and model.tokenizer_json is not None:
            write_gpt2(w, model)
            return kind
    wanted = {"llama": "tokenizer.model", "gpt2": "tokenizer.json"}
    raise VocabError(f"no tokenizer in {model.path}: expected {' or '.join(wanted[k] for k in kinds)}")

