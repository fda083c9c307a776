"""Tokenizer files of a Hugging Face folder -> `tokenizer.ggml.*`, as llama.cpp's converter.

- tokenizer.model (SentencePiece) -> model "llama", pre "default": piece, score and type of
  every id up to config vocab_size ("[PAD{i}]" unused beyond the model), then added tokens
  (added_tokens.json; tokenizer_config.json's added_tokens_decoder, control when special or
  special-looking) (`_create_vocab_sentencepiece`).
- else tokenizer.json (byte-level BPE) -> model "gpt2": tokens by id, padded the same way,
  added tokens control or user-defined, merges, and `pre` found as llama.cpp finds it: the
  sha256 of the ids the tokenizer gives for a fixed text (prehash.py). A tokenizer whose
  hash is unknown but whose pre-tokenizer is exactly one of the plain known splits (GPT-2 byte
  level, Llama 3, Qwen 2) is recognised by that split, where llama.cpp would stop.
- neither -> no tokenizer keys (the runtime then works on token ids only).
Special ids, add_bos/add_eos, merges and the chat template come from gguf-py's SpecialVocab,
the code llama.cpp's converter uses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from gguf import GGUFWriter, SpecialVocab, TokenType

from ..errors import UnsupportedError
from .arch import HParams
from .prehash import CHECK_TEXT, PRE_BY_HASH
from .source import SourceError

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE_BY_SPLIT = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}


@dataclass
class Vocab:
    """Everything written under tokenizer.ggml.* (plus SpecialVocab's ids, flags, template)."""

    model: str                        # "llama" (SentencePiece) | "gpt2" (byte-level BPE)
    pre: str
    tokens: list[bytes]
    types: list[int]
    scores: list[float] | None
    special: SpecialVocab
    add_space_prefix: bool | None = None

    def write(self, w: GGUFWriter) -> None:
        w.add_tokenizer_model(self.model)
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        w.add_token_types(self.types)
        self.special.add_to_gguf(w, quiet=True)
        if self.add_space_prefix is not None:
            w.add_add_space_prefix(self.add_space_prefix)


def load_vocab(folder: Path, h: HParams, arch: str) -> Vocab | None:
    """The folder's tokenizer as llama.cpp would write it for `arch`; None without one."""
    if (folder / "tokenizer.model").is_file():
        tokens, scores, types = _sentencepiece(folder, h)
        vocab = Vocab("llama", "default", tokens, types, scores,
                      SpecialVocab(folder, n_vocab=len(tokens)))
    elif (folder / "tokenizer.json").is_file():
        tokens, types, pre = _byte_level_bpe(folder, h)
        vocab = Vocab("gpt2", pre, tokens, types, None, SpecialVocab(folder, load_merges=True))
    else:
        return None
    config = _tokenizer_config(folder)
    if arch == "llama" and isinstance(config.get("add_prefix_space"), bool):
        vocab.add_space_prefix = config["add_prefix_space"]
    if arch.startswith("gemma") and vocab.model == "llama":
        vocab.add_space_prefix = False
    if arch == "gemma" and len(tokens) > 107 and "eot" not in vocab.special.special_token_ids:
        vocab.special.special_token_ids["eot"] = 107          # llama.cpp's GemmaModel.set_vocab
    return vocab


def looks_special(text: str) -> bool:
    """llama.cpp's does_token_look_special: added tokens some models forget to mark special."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>"))
            or (text.startswith("<unused") and text.endswith(">")))


def _tokenizer_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: cannot parse tokenizer_config.json: {e}") from e
    return data if isinstance(data, dict) else {}


def _sentencepiece(folder: Path, h: HParams) -> tuple[list[bytes], list[float], list[int]]:
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    path = folder / "tokenizer.model"
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise SourceError(f"{path}: cannot load SentencePiece model: {e}") from e
    n_vocab = int(h.find("vocab_size", default=sp.vocab_size()))
    tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
    scores, types = [-10000.0] * n_vocab, [int(TokenType.UNUSED)] * n_vocab
    for i in range(min(sp.vocab_size(), n_vocab)):
        tokens[i], scores[i] = sp.IdToPiece(i).encode("utf-8"), sp.GetScore(i)
        types[i] = int(TokenType.UNKNOWN if sp.IsUnknown(i) else TokenType.CONTROL
                       if sp.IsControl(i) else TokenType.UNUSED if sp.IsUnused(i)
                       else TokenType.BYTE if sp.IsByte(i) else TokenType.NORMAL)
    added = folder / "added_tokens.json"
    if added.is_file():
        for text, i in json.loads(added.read_text(encoding="utf-8")).items():
            if i < n_vocab:
                tokens[i], scores[i], types[i] = text.encode(), -1000.0, int(TokenType.USER_DEFINED)
    for key, data in _tokenizer_config(folder).get("added_tokens_decoder", {}).items():
        i, text = int(key), data["content"]
        if i >= n_vocab:
            continue
        if data.get("special") or looks_special(text):
            types[i] = int(TokenType.CONTROL)
        else:
            text, types[i] = text.replace("\u2581", " "), int(TokenType.USER_DEFINED)
        tokens[i], scores[i] = text.encode("utf-8"), -1000.0
    return tokens, scores, types


def _byte_level_bpe(folder: Path, h: HParams) -> tuple[list[bytes], list[int], str]:
    """llama.cpp's get_vocab_base: tokens by id, "[PAD{i}]" for ids the tokenizer lacks."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
        raise SourceError(f"{path}: cannot load tokenizer: {e}") from e
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise UnsupportedError(f"{path}: only byte-level BPE tokenizer.json is supported (this "
                               f"one is {model.get('type')!r}"
                               f"{' with byte_fallback' if model.get('byte_fallback') else ''}); "
                               f"SentencePiece models need tokenizer.model in the folder")
    by_id = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    n_vocab = int(h.find("vocab_size", default=max(by_id) + 1))
    if max(by_id) >= n_vocab:
        raise SourceError(f"{path}: token id {max(by_id)} >= config vocab_size {n_vocab}")
    tokens, types = [], []
    for i in range(n_vocab):
        text, kind = by_id.get(i), TokenType.NORMAL
        if text is None:
            text, kind = f"[PAD{i}]", TokenType.UNUSED
        elif i in added:
            kind = TokenType.CONTROL if added[i].get("special") or looks_special(text) \
                else TokenType.USER_DEFINED
            text = text if kind == TokenType.CONTROL else text.replace("\u2581", " ")
        tokens.append(text.encode("utf-8"))
        types.append(int(kind))
    return tokens, types, _pre_name(tok, spec, path)


def _pre_name(tok, spec: dict, path: Path) -> str:
    """tokenizer.ggml.pre: llama.cpp's fingerprint, else an exactly known split."""
    ids = tok.encode(CHECK_TEXT).ids
    digest = hashlib.sha256(str(ids).encode()).hexdigest()
    if digest in PRE_BY_HASH:
        return PRE_BY_HASH[digest]
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True) \
            and not steps[0].get("add_prefix_space", False):
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        split = steps[0].get("pattern", {}).get("Regex")
        if split in _PRE_BY_SPLIT and steps[0].get("behavior") == "Isolated":
            return _PRE_BY_SPLIT[split]
    raise UnsupportedError(f"{path}: BPE pre-tokenizer not recognised (llama.cpp fingerprint "
                           f"{digest[:16]}...); supported: "
                           f"{', '.join(sorted(set(PRE_BY_HASH.values()) | {'gpt-2'}))}")
