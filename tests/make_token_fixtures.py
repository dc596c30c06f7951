"""Make the tokenizer reference fixtures under tests/fixtures/tokens/ from llama.cpp.

Regenerate (needs llama-cpp-python, built from source: `pip install llama-cpp-python`, and the two real models):

    KVANT_TEST_SMOLLM2=/path/SmolLM2-135M-Instruct.Q4_1.gguf \
    KVANT_TEST_GEMMA3=/path/gemma-3-270m-Q4_K_M.gguf \
    python tests/make_token_fixtures.py

For each model (`smollm2`, `gemma3`) it writes
- `<model>_corpus.npz`: llama.cpp's ids for all of tests' corpora (`en`, `ru`: tokenize(text.encode(),
  add_bos=False, special=False)) as int32 arrays, compressed;
- `<model>.json`: the ids of TRICKY_STRINGS for every (add_special, parse_special) combination, the special ids
  (bos, eos, eot, the end-of-generation set, add_bos / add_eos), token_to_piece for a sample of ids and a sha256
  over token_to_piece of every id (special=True and False) so the detokenizer is checked on the whole vocabulary.
The corpora are read from ../shared/corpora (override with KVANT_CORPORA).
"""

import ctypes
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "fixtures" / "tokens"
CORPORA = Path(os.environ.get("KVANT_CORPORA", HERE.parent.parent / "shared" / "corpora"))
MODELS = {"smollm2": "KVANT_TEST_SMOLLM2", "gemma3": "KVANT_TEST_GEMMA3"}

TRICKY_STRINGS = [
    "",
    " ",
    "  ",
    "Hello world",
    " Hello",
    "Hello\n",
    "   leading spaces",
    "trailing spaces   ",
    "multiple    spaces   inside  words",
    "\t tabs\t\tand\ttext\t",
    "\n",
    "\n\n\nnewline runs\n\n\n\n",
    "line1\r\nline2\r\n\r\n",
    "   \n   \n \t \n",
    "x" + "\n" * 40 + "y",
    "1234567",
    "digits 1 12 123 1234 12345 3.14159 -42 1,000,000 007",
    "emoji 😀👍🏽 🇷🇺 ❤️ 👨‍👩‍👧",
    "\U0001F600",
    "Привет, мир! Hello world",
    "смешанный text с Latin буквами123 и цифрами 2024г.",
    "Ёлки-палки, ЁЖ ёж Ї ї Ґ",
    "café naïve façade Ångström über Søren ĳ ǅ",
    "中文测试 日本語のテキスト 한국어",
    "math ∑∫√∞ ≠ ≤ ≥ ± × ÷ €$£¥",
    "٣٤٥ Arabic-Indic digits ² ½ Ⅻ ⅷ",
    "don't we'll they're I'M YOU'VE it'S ſ 'ſ",
    "    def f(x):\n        return x  # comment\n",
    "\u00a0nbsp\u2009thin\u3000ideographic\u2028sep\u0085nel",
    "zero\u200bwidth joiner\u200d soft\u00adhyphen",
    "control \x01\x1f\x7f chars",
    "new codepoints \U0001FAE8 \u1C89 \U0002EBF0 \U00031350",
    "ab" * 40,
    "<|im_start|>user\nHi<|im_end|>\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "a<|im_start|>b<|endoftext|>c",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos><eos><pad><unk><mask>",
    "<unused0> [multimodal] <start_of_image><end_of_image>",
    "<0x41><0x0A> <0xFF>",
    "<table><tr><td>cell</td></tr></table>",
    "<|endoftext|>",
]

# (add_special, parse_special) combinations stored for every tricky string
COMBOS = [(False, False), (True, False), (False, True), (True, True)]
N_SAMPLE = 400


def _vocab(llm):
    return llm._model.vocab


def token_to_piece(vocab, token, special):
    import llama_cpp

    buf = ctypes.create_string_buffer(1024)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        raise RuntimeError(f"piece of token {token} longer than {len(buf)} bytes")
    return buf.raw[:n]


def detokenize(vocab, ids, remove_special, unparse_special):
    import llama_cpp

    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    size = 16 * len(ids) + 64
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, remove_special, unparse_special)
    if n < 0:
        raise RuntimeError("detokenize buffer too small")
    return buf.raw[:n]


def make(name, path):
    import llama_cpp

    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    vocab = _vocab(llm)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    corpus = {}
    for lang in ("en", "ru"):
        text = (CORPORA / f"{lang}.txt").read_text(encoding="utf-8")
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        corpus[lang] = np.asarray(ids, dtype=np.int32)
        back = detokenize(vocab, ids, False, False)
        print(f"{name} {lang}: {len(ids)} tokens, llama.cpp round trip {'ok' if back == text.encode() else 'DIFFERS'}")
    np.savez_compressed(OUT / f"{name}_corpus.npz", **corpus)

    tricky = []
    for s in TRICKY_STRINGS:
        entry = {"text": s}
        for add_special, parse_special in COMBOS:
            key = f"add{int(add_special)}_special{int(parse_special)}"
            entry[key] = llm.tokenize(s.encode("utf-8"), add_bos=add_special, special=parse_special)
        ids = entry["add1_special1"]
        entry["detok_keep_special"] = detokenize(vocab, ids, False, True).hex()
        entry["detok_remove_special"] = detokenize(vocab, ids, True, False).hex()
        tricky.append(entry)

    h_special, h_plain = hashlib.sha256(), hashlib.sha256()
    for t in range(n_vocab):
        for h, special in ((h_special, True), (h_plain, False)):
            p = token_to_piece(vocab, t, special)
            h.update(len(p).to_bytes(4, "little") + p)
    rng = np.random.default_rng(0)
    sample = sorted(set(range(300)) | set(rng.integers(0, n_vocab, N_SAMPLE).tolist()))
    pieces = {str(t): [token_to_piece(vocab, t, True).hex(), token_to_piece(vocab, t, False).hex()] for t in sample}

    fixture = {
        "model": Path(path).name,
        "n_vocab": n_vocab,
        "bos": llama_cpp.llama_vocab_bos(vocab),
        "eos": llama_cpp.llama_vocab_eos(vocab),
        "eot": llama_cpp.llama_vocab_eot(vocab),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "add_eos": bool(llama_cpp.llama_vocab_get_add_eos(vocab)),
        "eog": [t for t in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)],
        "pieces_sha256": {"special": h_special.hexdigest(), "plain": h_plain.hexdigest()},
        "pieces": pieces,
        "tricky": tricky,
    }
    with open(OUT / f"{name}.json", "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, indent=0)
    print(f"{name}: wrote {OUT}")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    done = 0
    for name, env in MODELS.items():
        path = os.environ.get(env)
        if not path:
            print(f"{name}: {env} not set, skipped", file=sys.stderr)
            continue
        make(name, path)
        done += 1
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
