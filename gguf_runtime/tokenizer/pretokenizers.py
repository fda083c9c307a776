"""`tokenizer.ggml.pre` -> the word-splitting regexes and flags llama.cpp uses for BPE vocabularies.

The regexes are llama.cpp's (`llm_tokenizer_bpe` in src/llama-vocab.cpp), in its order: each one
splits every piece the previous ones produced, keeping matches and the text between them
("isolated"). llama.cpp runs two of them through hand-written splitters (`gpt2`, `llama3`) and
the rest through std::regex over text whose non-ASCII code points are collapsed to one
stand-in byte per Unicode category. Both match what Oniguruma (the engine of the `tokenizers`
library) matches with the same pattern, given three adjustments (GPT2 below, `onig_pattern`):

- the gpt2 splitter also implements a final `|\\s+` that its regex string lacks;
- before std::wregex runs (patterns without `\\p{..}`), non-ASCII whitespace in the text is
  replaced by `\\v`, so it never matches a literal range such as `[　-。]` or `[ࠀ-一]`;
- std::regex `$` (no multiline) is the end of the piece, Oniguruma's `\\z`.

The fixtures check each distinct entry of this table against llama.cpp on one vocabulary.

Flags per pre-tokenizer (`load()` in llama-vocab.cpp): `clean_spaces` (detokenize removes the
space before `?!.,` and in front of `'s 'm 're 've`), `ignore_merges` (a word that is itself a
token is not merged), `add_bos` (default of `tokenizer.ggml.add_bos_token`), `no_bos`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UnsupportedError

_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Case-split words: (?=[\p{L}])([^a-z]) is "a letter that is not a-z" (stands for \p{Lu}...).
_UPPER, _LOWER = r"((?=[\p{L}])([^a-z]))", r"((?=[\p{L}])([^A-Z]))"


def _cased(contraction: str, number: str) -> str:
    word = r"[^\r\n\p{L}\p{N}]?"
    return (word + _UPPER + "*" + _LOWER + "+" + contraction + "|" + word + _UPPER + "+" + _LOWER
            + "*" + contraction + "|" + number
            + r"| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")


GPT4O = _cased(_CONTRACTIONS + "?", r"\p{N}{1,3}")
TEKKEN = _cased("", r"\p{N}")
SEED_CODER = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BAILINGMOE = (r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+")
BLOOM = r" ?[^(\s|.,!?…。，、।۔،)]+"
_CJK = r"[一-龥ࠀ-一가-퟿]+"
# Cased letters; the \u escapes are code points that Unicode normalization would change.
DEEPSEEK_LLM_LETTERS = (
    r"\s?"
    "[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ"
    "-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛ"
    "ὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ"
    "\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+"
)


@dataclass(frozen=True)
class PreTokenizer:
    """How one `tokenizer.ggml.pre` value splits text before BPE merges, and its flags."""

    regexes: tuple[str, ...]
    clean_spaces: bool = True
    ignore_merges: bool = False
    add_bos: bool = False
    no_bos: bool = False  # chatglm: no BOS token by default


def _p(*regexes: str, **flags) -> PreTokenizer:
    return PreTokenizer(tuple(regexes), **flags)


_LLAMA3 = _p(LLAMA3, ignore_merges=True, add_bos=True)
_STARCODER = _p(r"\p{N}", GPT2)
_QWEN2 = _p(QWEN2, clean_spaces=False)
_GPT4O = _p(GPT4O, clean_spaces=False)
_DEEPSEEK3 = _p(r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+",
                r'[!"#$%&' r"'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+"
                r"|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
                r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+", clean_spaces=False)

PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": _p(r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                     "midm-2.0", "lfm2"), _LLAMA3),
    **dict.fromkeys(("dbrx", "smaug-bpe"), _p(LLAMA3)),
    **dict.fromkeys(("glm4", "chatglm-bpe"), _p(LLAMA3, no_bos=True)),
    "deepseek-llm": _p(r"[\r\n]", DEEPSEEK_LLM_LETTERS, r"\s?[!-/:-~！-／：-～‘-‟　-。]+", r"\s+$",
                       _CJK, r"\p{N}+", clean_spaces=False),
    "deepseek-coder": _p(r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}", clean_spaces=False),
    **dict.fromkeys(("deepseek-v3", "hunyuan-dense"), _DEEPSEEK3),
    "falcon": _p(r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"),
    **dict.fromkeys(("gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
                     "a.x-4.0", "mellum", "exaone4", "mpt", "olmo", "jais"), _p(GPT2)),
    **dict.fromkeys(("trillion", "granite-docling"), _p(GPT2, clean_spaces=False)),
    **dict.fromkeys(("starcoder", "refact", "codeshell", "exaone", "minerva-7b"), _STARCODER),
    **dict.fromkeys(("command-r", "smollm"), _p(r"\p{N}", GPT2, clean_spaces=False)),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "hunyuan", "solar-open", "grok-2"),
                    _QWEN2),
    **dict.fromkeys(("megrez", "stablelm2"), _p(QWEN2)),
    "qwen35": _p(QWEN35, clean_spaces=False),
    **dict.fromkeys(("gpt-4o", "llama4", "minimax-m2"), _GPT4O),
    "tekken": _p(TEKKEN, clean_spaces=False, ignore_merges=True, add_bos=True),
    "seed-coder": _p(SEED_CODER, clean_spaces=False),
    **dict.fromkeys(("bailingmoe", "bailingmoe2", "llada-moe"), _p(BAILINGMOE, clean_spaces=False)),
    **dict.fromkeys(("bloom", "gpt3-finnish"), _p(BLOOM)),
    "poro-chat": _p(BLOOM, clean_spaces=False),
    "viking": _p(BLOOM, r"\p{N}", clean_spaces=False),
}


def pre_tokenizer(name: str | None, source: str) -> PreTokenizer:
    """The PreTokenizer for a `tokenizer.ggml.pre` value (absent -> "default", as llama.cpp)."""
    spec = PRE_TOKENIZERS.get("default" if name is None else name)
    if spec is None:
        raise UnsupportedError(f"{source}: unknown tokenizer.ggml.pre {name!r}; supported: "
                               f"{', '.join(sorted(PRE_TOKENIZERS))}")
    return spec


# White_Space code points above ASCII (llama.cpp's unicode_set_whitespace), Oniguruma syntax.
_NON_ASCII_SPACE = r"\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_CLASS = re.compile(r"\[(?!\^)((?:\\.|[^\]\\])*)\]")  # a bracket class, not negated


def _no_space_in_literal_class(match: re.Match) -> str:
    body = match[1]
    if all(ord(c) < 0x80 for c in body):
        return match[0]
    return f"[{body}&&[^{_NON_ASCII_SPACE}]]"


def onig_pattern(regex: str) -> str:
    """llama.cpp's regex as an Oniguruma pattern with the same matches (see module docstring)."""
    if r"\p{" not in regex:
        regex = _CLASS.sub(_no_space_in_literal_class, regex)
    return regex[:-1] + r"\z" if regex.endswith("$") else regex
