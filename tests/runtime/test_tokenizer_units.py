"""Tokenizer on tiny hand-built vocabularies (no real model): BPE merge order, pre-token boundaries, SentencePiece
scores and byte fallback, special-token splitting, BOS/EOS, end-of-generation tokens, detokenization."""
import random

import numpy as np
import pytest
from sentencepiece import sentencepiece_model_pb2 as pb

from kvant.runtime.tokenizer import Tokenizer, TokenizerError, _clean_spaces
from kvant.runtime.pretokenize import PRE_TOKENIZERS
from kvant.runtime.tokenizer_bpe import BYTE_TO_CHAR, build_bpe, decode_byte_level
from kvant.runtime.tokenizer_spm import serialize_model, spm_merge

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6


# ---- BPE ----

def bpe(extra, merges, pre="gpt-2", special=(), user=(), **keys):
    """A byte-level vocabulary: the 256 byte characters, then `extra` tokens, then control / user-defined ones."""
    tokens = [*BYTE_TO_CHAR, *extra, *special, *user]
    types = [NORMAL] * (256 + len(extra)) + [CONTROL] * len(special) + [USER_DEFINED] * len(user)
    md = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.token_type": np.array(types, np.int32), "tokenizer.ggml.merges": list(merges)}
    md.update(keys)
    return Tokenizer.from_metadata(md)


def ids_of(tok, *texts):
    return [tok.tokens.index(t) for t in texts]


def test_bpe_lowest_rank_merges_first():
    a = bpe(["ab", "bc", "abc"], ["b c", "a b", "a bc"])
    assert a.encode("abc") == ids_of(a, "abc")          # b+c (rank 0), then a+bc
    b = bpe(["ab", "bc", "abc"], ["a b", "b c", "a bc"])
    assert b.encode("abc") == ids_of(b, "ab", "c")      # a+b first; "ab c" is no merge


def test_bpe_ties_go_left():
    tok = bpe(["aa"], ["a a"])
    assert tok.encode("aaa") == ids_of(tok, "aa", "a")
    assert tok.encode("aaaa") == ids_of(tok, "aa", "aa")


def test_bpe_repeated_merge_keeps_first_rank():
    # llama.cpp keeps the first rank of a repeated merge: b+c stays rank 0, before a+b
    tok = bpe(["ab", "bc"], ["b c", "a b", "b c"])
    assert tok.encode("abc") == ids_of(tok, "a", "bc")


def test_bpe_merges_stop_at_pretokens():
    tok = bpe(["aĠ", "Ġb", "ab"], ["a Ġ", "Ġ b", "a b"])
    assert tok.encode("a b") == ids_of(tok, "a", "Ġb")  # gpt-2 splits "a" | " b": no "aĠ"
    assert tok.encode("ab") == ids_of(tok, "ab")


def test_bpe_byte_level_and_utf8():
    tok = bpe([], [])
    text = "é ж😀\n"
    ids = tok.encode(text)
    assert [tok.tokens[i] for i in ids] == [BYTE_TO_CHAR[b] for b in text.encode()]
    assert tok.decode(ids) == text
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode()


def test_bpe_smollm_digits_split_one_by_one():
    tok = bpe(["12", "Ġ1"], ["1 2", "Ġ 1"], pre="smollm")
    assert tok.encode("12 1") == ids_of(tok, "1", "2", "Ġ", "1")
    tok = bpe(["12", "Ġ1"], ["1 2", "Ġ 1"], pre="gpt-2")
    assert tok.encode("12 1") == ids_of(tok, "12", "Ġ1")


def test_bpe_llama3_ignore_merges_takes_whole_words():
    tok = bpe(["hello"], [], pre="llama-bpe")  # no merge leads to "hello": taken whole all the same
    assert tok.encode("hello", add_special=False) == ids_of(tok, "hello")
    tok = bpe(["hello"], [], pre="gpt-2")
    assert tok.encode("hello") == ids_of(tok, *"hello")


def test_bpe_byte_missing_from_vocab_blocks_merges():
    # Falcon's vocabulary has no "ċ" (byte 0x0B): llama.cpp keeps it as a symbol nothing merges with, then drops it
    tok = bpe(["ĠĠ"], ["Ġ Ġ"])
    vocab = {t: i for i, t in enumerate(tok.tokens) if t != BYTE_TO_CHAR[0x0B]}
    md = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2", "tokenizer.ggml.tokens": list(vocab),
          "tokenizer.ggml.merges": ["Ġ Ġ"]}
    tok = Tokenizer.from_metadata(md)
    assert tok.encode("  ") == ids_of(tok, "ĠĠ")
    assert tok.encode(" \x0b ") == ids_of(tok, "Ġ", "Ġ")


def _pieces(pre, text):
    return [text[a:b] for _, (a, b) in build_bpe({}, [], PRE_TOKENIZERS[pre]).pre_tokenizer.pre_tokenize_str(text)]


def test_pretokenizer_uses_llama_cpp_unicode_tables():
    # U+1C89 is a letter since Unicode 16.0; llama.cpp's tables (15.1) leave it unassigned, so it splits off
    assert len(_pieces("gpt-2", "ab")) == 1
    assert len(_pieces("gpt-2", "a\u1c89b")) == 3
    # llama.cpp runs deepseek's CJK ranges on text whose white space is already \v: U+2000 is not in "[ࠀ-一]"
    assert _pieces("deepseek-llm", "\u4e00\u2000\u4e01") == ["\u4e00", "\u2000", "\u4e01"]
    assert _pieces("deepseek-llm", "\u4e00\u4e01") == ["\u4e00\u4e01"]


def test_control_tokens_only_with_parse_special():
    tok = bpe([], [], special=["<|im_start|>", "<|im_end|>"])
    start, end = ids_of(tok, "<|im_start|>", "<|im_end|>")
    assert tok.encode("<|im_start|>hi<|im_end|>", parse_special=True) == [start, *ids_of(tok, "h", "i"), end]
    plain = tok.encode("<|im_start|>hi", parse_special=False)
    assert start not in plain and tok.decode(plain) == "<|im_start|>hi"


def test_user_defined_tokens_always_split():
    tok = bpe([], [], user=["<tool>"])
    (t,) = ids_of(tok, "<tool>")
    assert tok.encode("a<tool><tool>b") == [*ids_of(tok, "a"), t, t, *ids_of(tok, "b")]
    assert tok.encode("<tool>", parse_special=True) == [t]


def test_longer_special_token_wins():
    tok = bpe([], [], special=["<a>", "<a><b>"])
    short, long_ = ids_of(tok, "<a>", "<a><b>")
    assert tok.encode("<a><b><a>", parse_special=True) == [long_, short]


def test_bos_eos_flags():
    keys = {"tokenizer.ggml.bos_token_id": 256, "tokenizer.ggml.eos_token_id": 257,
            "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True}
    tok = bpe([], [], special=["<s>", "</s>"], **keys)
    a = ids_of(tok, "a")
    assert tok.encode("a") == [256, *a, 257]
    assert tok.encode("a", add_special=False) == a
    assert tok.encode("") == [256, 257]
    assert tok.decode(tok.encode("a"), special=False, remove_special=True) == "a"
    assert tok.decode(tok.encode("a")) == "<s>a</s>"


def test_end_of_generation_found_by_text():
    tok = bpe(["<|im_end|>"], [], special=["<|endoftext|>"], **{"tokenizer.ggml.eos_token_id": 256 + 1})
    im_end, eot = ids_of(tok, "<|im_end|>", "<|endoftext|>")
    assert set(tok.eot_ids) == {im_end, eot}
    assert tok.is_control(im_end)  # a normal token with an end-of-turn text becomes control, as in llama.cpp
    assert tok.token_bytes(im_end, special=False) == b""
    assert tok.encode("<|im_end|>", parse_special=True) == [im_end]


def test_clean_spaces_on_decode():
    assert _clean_spaces(b"Hello , world . Is it ? Yes !") == b"Hello, world. Is it? Yes!"
    assert _clean_spaces(b"a ' b") == b"a'b"
    assert _clean_spaces(b"it 's I 'm we 're you 've don 't") == b"it's I'm we're you've don 't"
    tok = bpe(["Ġ,"], [], pre="gpt-2")             # gpt-2 cleans, smollm does not
    assert tok.decode(tok.encode("a , b")) == "a, b"
    assert bpe([], [], pre="smollm").decode(tok.encode("a , b")) == "a , b"


def test_decode_byte_level_marks_foreign_characters():
    assert decode_byte_level("Ġhi") == b" hi"
    assert decode_byte_level("\u4e00") == b"[UNK_BYTE_0xe4b880\xe4\xb8\x80]"


@pytest.mark.parametrize("md, message", [
    ({}, "no tokenizer"),
    ({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]}, "not supported"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.pre": "nope",
      "tokenizer.ggml.merges": []}, "pre-tokenizer 'nope'"),
    ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"]}, "no merges"),
    ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a", "a", "b"],
      "tokenizer.ggml.unknown_token_id": 2}, "bad SentencePiece vocabulary"),
])
def test_bad_metadata(md, message):
    with pytest.raises(TokenizerError, match=message):
        Tokenizer.from_metadata(md)


# ---- SentencePiece ----

BYTES = [f"<0x{b:02X}>" for b in range(256)]


def spm(pieces, add_space_prefix=False, user=(), **keys):
    """<unk> <s> </s>, the 256 byte tokens, user-defined tokens, then (text, score) pieces."""
    tokens = ["<unk>", "<s>", "</s>", *BYTES, *user, *(p for p, _ in pieces)]
    scores = [0.0] * (3 + 256 + len(user)) + [s for _, s in pieces]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256 + [USER_DEFINED] * len(user) + [NORMAL] * len(pieces)
    md = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
          "tokenizer.ggml.scores": np.array(scores, np.float32), "tokenizer.ggml.token_type": np.array(types, np.int32),
          "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
          "tokenizer.ggml.add_space_prefix": add_space_prefix, "tokenizer.ggml.add_bos_token": False}
    md.update(keys)
    return Tokenizer.from_metadata(md)


LETTERS = [("▁", -1.0), ("a", -2.0), ("b", -3.0), ("c", -4.0)]


def test_spm_highest_score_merges_first():
    tok = spm([*LETTERS, ("ab", -10.0), ("bc", -5.0)])
    assert tok.encode("abc") == ids_of(tok, "a", "bc")
    tok = spm([*LETTERS, ("ab", -5.0), ("bc", -10.0)])
    assert tok.encode("abc") == ids_of(tok, "ab", "c")


def test_spm_ties_go_left():
    tok = spm([*LETTERS, ("aa", -5.0)])
    assert tok.encode("aaa") == ids_of(tok, "aa", "a")


def test_spm_byte_fallback():
    tok = spm(LETTERS)
    assert tok.encode("aé") == ids_of(tok, "a", "<0xC3>", "<0xA9>")
    assert tok.decode(tok.encode("aé")) == "aé"
    assert tok.token_bytes(ids_of(tok, "<0xC3>")[0]) == b"\xc3"


def test_spm_spaces_and_prefix():
    tok = spm([*LETTERS, ("▁a", -5.0)], add_space_prefix=True)
    assert tok.encode("a a") == ids_of(tok, "▁a", "▁a")
    assert tok.decode(tok.encode("a a")) == "a a"  # the prefix space is taken off again
    # after a special token the next text gets the prefix space again, as in llama.cpp
    assert tok.encode("<s>a", parse_special=True) == [1, *ids_of(tok, "▁a")]
    tok = spm([*LETTERS, ("▁a", -5.0)], add_space_prefix=False)
    assert tok.encode("a a") == ids_of(tok, "a", "▁a")


def test_spm_user_defined_split_before_merging():
    tok = spm([*LETTERS, ("a\n", -1.0)], user=["\n", "\n\n"])
    nl, nl2 = ids_of(tok, "\n", "\n\n")
    assert tok.encode("a\n\n\na") == [*ids_of(tok, "a"), nl2, nl, *ids_of(tok, "a")]


def test_spm_merges_into_byte_token_like_llama_cpp():
    # llama.cpp merges "<0x4" + "1>" into the byte token "<0x41>" (sentencepiece would not): handled by spm_merge
    pieces = [("0", -1.0), ("x", -1.0), ("4", -1.0), ("<0", -2.0),  # "<", "1" and ">" are not tokens
              ("x4", -3.0), ("<0x4", -4.0), ("1>", -5.0)]
    tok = spm(pieces)
    assert tok.encode("<0x41>") == ids_of(tok, "<0x41>")
    assert tok.decode(tok.encode("<0x41>")) == "A"


def test_spm_sentencepiece_agrees_with_reference_merge():
    pieces = [*LETTERS, ("ab", -5.0), ("bc", -6.0), ("ca", -5.0), ("▁a", -4.5), ("abc", -7.0), ("▁ab", -8.0),
              ("aa", -5.0), ("▁▁", -9.0)]
    tok = spm(pieces)
    index = {t: i for i, t in enumerate(tok.tokens)}
    scores = [0.0] * (3 + 256) + [s for _, s in pieces]
    byte_ids = [index[b] for b in BYTES]
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice("abc ab é") for _ in range(rng.randrange(0, 14)))
        ref = spm_merge(text.replace(" ", "▁"), index.get, scores, byte_ids)
        assert tok.encode(text) == ref, text


def test_serialized_model_parses_like_protobuf():
    pieces = ["<unk>", "a", "▁" * 70, "x" * 200, "ж"]  # lengths across the 1- and 2-byte varints
    scores = np.array([0.0, -1.5, 3.25, -1e6, 7.0], np.float32)
    types = np.array([2, 1, 1, 1, 1], np.uint8)
    m = pb.ModelProto()
    m.ParseFromString(serialize_model(pieces, scores, types, byte_fallback=False))
    assert [p.piece for p in m.pieces] == pieces
    assert [p.score for p in m.pieces] == scores.tolist()
    assert [p.type for p in m.pieces] == types.tolist()
    assert m.trainer_spec.model_type == pb.TrainerSpec.BPE
    assert not m.normalizer_spec.add_dummy_prefix and not m.normalizer_spec.escape_whitespaces
