"""BPE pre-tokenizers as data: tokenizer.ggml.pre name -> the regexes llama.cpp splits the text with, and flags.

Facts from llama.cpp's src/llama-vocab.cpp (llm_tokenizer_bpe, llama_vocab::impl::load). Each regex splits every
piece left by the previous one; matches and the text between matches both become pieces ("isolated"). llama.cpp runs
the common regexes through hand-written splitters and the rest through std::regex over a text where each non-ASCII
code point is collapsed to one byte standing for its Unicode category; both follow the regex semantics with
\\p{L}/\\p{N}/\\p{P}/\\p{S}/\\p{M} meaning the whole general category and \\s the White_Space set, which is what
Oniguruma (behind tokenizers' Regex) does; `onig_regex` bridges the two places where the character tables differ.
So only the pre-tokenizers whose llama.cpp behaviour is exactly their regex are listed; those with custom splitters
that are not a regex (kimi-k2, afmoe, tiny_aya, superbpe), with category approximations (youtu) or without GPT-2
byte encoding (gemma4, sarvam-moe, whitespace) are not.
"""

import re
from dataclasses import dataclass

# llama.cpp's form of the case-insensitive contractions (?i:'s|'t|...) (no Unicode case folding such as U+017F).
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")
JAIS2 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
         r"|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)"
         r"|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}")
SEED_CODER = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)"
              r"|\s+")
UFAKZEKA = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
BAILINGMOE = (r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+")
EXAONE_MOE = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]?"
              r"|\s*[\r\n]|\s+(?!\S)|\s+")
MINICPM5 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_LOWER_UPPER = (r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+<C>"
                r"|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*<C>")
TEKKEN = _LOWER_UPPER.replace("<C>", "") + r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
GPT4O = (_LOWER_UPPER.replace("<C>", _CONTRACTIONS + "?") + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+"
         r"|\s+(?!\S)|\s+")
DEEPSEEK3_MAIN = (r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
                  r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPARK_MAIN = (r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
              r"| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+")
DEEPSEEK_LLM_LETTERS = (
    "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-"
    "\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d"
    "\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-"
    "\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113"
    "\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149"
    "\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b"
    "\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-"
    "\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0"
    "-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+"
)
DEEPSEEK_LLM_PUNCT = "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"
CJK_HANGUL = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
CJK_KANA = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"
BLOOM = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"


# Code points that got a letter, number, mark, punctuation or symbol category in Unicode 16.0. llama.cpp's tables
# (src/unicode-data.cpp, Unicode 15.1) leave them unassigned, tokenizers' Oniguruma (Unicode 16) does not; as ranges
# (the gaps between them are unassigned in both).
UNICODE_16_NEW = (
    "\u0897\u1b4e-\u1b4f\u1b7f\u1c89-\u1c8a\u2427-\u2429\u31e4-\u31e5\ua7cb-\ua7cd\ua7da-\ua7dc"
    "\U000105c0-\U000105f3\U00010d40-\U00010d8f\U00010ec2-\U00010efc\U00011380-\U000113e2\U000116d0-\U000116e3"
    "\U00011bc0-\U00011bf9\U00011f5a\U00013460-\U000143fa\U00016100-\U00016139\U00016d40-\U00016d79\U00018cff"
    "\U0001cc00-\U0001ceb3\U0001e5d0-\U0001e5ff\U0001f8b2-\U0001f8c1\U0001fa89-\U0001fa8f\U0001fabe\U0001fac6"
    "\U0001fadc-\U0001fadf\U0001fae9\U0001fbcb-\U0001fbef"
)
# White_Space beyond ASCII: llama.cpp turns these into \v before running a regex without \p{..} through std::wregex
NON_ASCII_SPACE = "\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CATEGORY = re.compile(r"\\p\{([LNPSM])\}")
_POSITIVE_CLASS = re.compile(r"\[(?!\^)((?:\\.|[^\]\\])*)\]")


def onig_regex(regex: str) -> str:
    """One of llama.cpp's regexes as Oniguruma must run it to split text as llama.cpp does: \\p{X} without the
    Unicode 16.0 additions, and in a regex without \\p{..}, character classes listing non-ASCII characters without
    the non-ASCII white space (deepseek's CJK ranges include U+3000 and U+2000-U+200A)."""
    if "\\p{" in regex:
        return _CATEGORY.sub(lambda m: f"[\\p{{{m[1]}}}&&[^{UNICODE_16_NEW}]]", regex)
    return _POSITIVE_CLASS.sub(
        lambda m: f"[[{m[1]}]&&[^{NON_ASCII_SPACE}]]" if any(ord(c) > 127 for c in m[1]) else m[0], regex)


@dataclass(frozen=True)
class PreTokenizer:
    """How one tokenizer.ggml.pre value splits text before BPE, and the flags llama.cpp ties to it."""

    regexes: tuple[str, ...]
    ignore_merges: bool = False  # a piece that is itself a token is taken whole
    clean_spaces: bool = True    # detokenize removes the space before ?!., (clean_up_tokenization_spaces)
    add_bos: bool = False        # default when tokenizer.ggml.add_bos_token is absent
    has_bos: bool = True         # chatglm: no BOS token at all


_DEFAULT = PreTokenizer((r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"))
_LLAMA3 = PreTokenizer((LLAMA3,), ignore_merges=True, add_bos=True)
_STARCODER = PreTokenizer((r"\p{N}", GPT2))
_GPT2 = PreTokenizer((GPT2,))
_QWEN2 = PreTokenizer((QWEN2,), clean_spaces=False)
_DEEPSEEK3 = PreTokenizer((r"\p{N}{1,3}", CJK_KANA, DEEPSEEK3_MAIN), clean_spaces=False)
_GPT4O = PreTokenizer((GPT4O,), clean_spaces=False)

PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": _DEFAULT,
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano"), _LLAMA3),
    "dbrx": PreTokenizer((LLAMA3,)),
    "smaug-bpe": PreTokenizer((LLAMA3,)),
    "jais-2": PreTokenizer((JAIS2,)),
    "deepseek-llm": PreTokenizer(("[\r\n]", DEEPSEEK_LLM_LETTERS, DEEPSEEK_LLM_PUNCT, r"\s+$", CJK_HANGUL,
                                  r"\p{N}+"), clean_spaces=False),
    "deepseek-coder": PreTokenizer(("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", CJK_HANGUL, r"\p{N}"),
                                   clean_spaces=False),
    **dict.fromkeys(("deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"), _DEEPSEEK3),
    "falcon": PreTokenizer((r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]")),
    **dict.fromkeys(("starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"), _STARCODER),
    "command-r": PreTokenizer(_STARCODER.regexes, clean_spaces=False),
    "smollm": PreTokenizer(_STARCODER.regexes, clean_spaces=False),
    **dict.fromkeys(("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
                     "mellum", "mpt", "olmo", "jais", "exaone4"), _GPT2),
    "trillion": PreTokenizer((GPT2,), clean_spaces=False),
    "granite-docling": PreTokenizer((GPT2,), clean_spaces=False),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open"), _QWEN2),
    **dict.fromkeys(("stablelm2", "megrez"), PreTokenizer((QWEN2,))),
    "qwen35": PreTokenizer((QWEN35,), clean_spaces=False),
    "poro-chat": PreTokenizer((BLOOM,), clean_spaces=False),
    "bloom": PreTokenizer((BLOOM,)),
    "gpt3-finnish": PreTokenizer((BLOOM,)),
    "chatglm-bpe": PreTokenizer((LLAMA3,), has_bos=False),
    "glm4": PreTokenizer((LLAMA3,), ignore_merges=True, has_bos=False),
    "glm5": PreTokenizer((LLAMA3,), ignore_merges=True, has_bos=False),
    "viking": PreTokenizer((BLOOM, r"\p{N}"), clean_spaces=False),
    "tekken": PreTokenizer((TEKKEN,), ignore_merges=True, clean_spaces=False, add_bos=True),
    "chameleon": PreTokenizer((r"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\t\n]|    |  )",
                               r"\p{N}", r"[\p{P}!-/:-@\[-`{-~]", GPT2), clean_spaces=False, add_bos=True),
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O),
    "seed-coder": PreTokenizer((SEED_CODER,), clean_spaces=False),
    "ufakzeka": PreTokenizer((UFAKZEKA,), clean_spaces=False),
    "grok-2": PreTokenizer((QWEN2,), clean_spaces=False),
    **dict.fromkeys(("bailingmoe", "bailingmoe2", "llada-moe"), PreTokenizer((BAILINGMOE,), clean_spaces=False)),
    "exaone-moe": PreTokenizer((EXAONE_MOE,), clean_spaces=False),
    "spark2_5": PreTokenizer((r"\p{N}{1,3}", CJK_KANA, SPARK_MAIN, r"\p{N}"), clean_spaces=False),
    "laguna": PreTokenizer(("[^\n]+|[\n]+", QWEN2), clean_spaces=False),
    "minicpm5": PreTokenizer((r"\p{N}{1,3}", MINICPM5), ignore_merges=True),
}
