"""Tokenizer built from `tokenizer.ggml.*` metadata, giving llama.cpp's token ids and text.

Encoding follows llama.cpp's `llama_vocab::impl::tokenize`: special tokens are cut out of the
text first (`tokenizer_st_partition`: longest token text first; control tokens only with
special=True, user-defined ones always), then each remaining piece goes to the model's merge
engine (backends.py): 'llama' = SentencePiece merges by score with `<0xNN>` byte
fallback, a leading space before pieces that follow a special token (or start the text) when
`add_space_prefix`; 'gpt2' = byte-level BPE after the `tokenizer.ggml.pre` regex splits;
'gemma4' = SentencePiece-style BPE; 'bert' = WordPiece; 't5' = Unigram.
Decoding is llama.cpp's `detokenize`: per-token pieces, the first token's leading space dropped
when `add_space_prefix`, then the `clean_spaces` pass of some BPE pre-tokenizers.
Token attributes, default ids and end-of-generation tokens follow `llama_vocab::impl::load`,
including its guesses from token text (special.py).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import numpy as np

from ..errors import GGUFFormatError, MissingKeyError, ModelInputError, UnsupportedError
from ..gguf_file import open_gguf
from .backends import (BpeBackend, SpmBackend, SpmBpeBackend, UgmBackend, WpmBackend,
                                 clean_spaces, gpt2_decode)
from .pretokenizers import pre_tokenizer
from .special import (BYTE, C_SPACE, CONTROL, K, LSTRIP, NORMAL, RSTRIP, SPECIAL,
                                TYPE_ATTR, UNKNOWN, UNUSED, USER_DEFINED, guess_roles, special_ids,
                                strip_flags)

SUPPORTED_MODELS = ("gpt2", "llama", "gemma4", "bert", "t5")


@dataclass(frozen=True)
class _Flags:
    add_bos: bool
    add_eos: bool
    add_sep: bool
    add_space_prefix: bool
    clean_spaces: bool


MAX_VOCAB = 1 << 21          # tokens


def _read_vocab(meta: dict, source: str) -> tuple[list[str], list[float], list[int]]:
    """Token texts (empty ones renamed as llama.cpp does), scores and attributes."""
    texts = meta.get(K + "tokens")
    if texts is None:
        raise MissingKeyError(f"{source}: required metadata key '{K}tokens' is missing")
    if not isinstance(texts, list) or not texts or not isinstance(texts[0], str):
        raise GGUFFormatError(f"{source}: {K}tokens must be a non-empty array of strings")
    if len(texts) > MAX_VOCAB:
        raise GGUFFormatError(f"{source}: {K}tokens has {len(texts)} tokens; at most {MAX_VOCAB} "
                              f"are supported (the largest real vocabularies have about 260,000)")
    texts = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(texts)]
    n = len(texts)
    scores, types = meta.get(K + "scores"), meta.get(K + "token_type")
    for key, arr, kind in (("scores", scores, (int, float)), ("token_type", types, int)):
        numeric = isinstance(arr, np.ndarray) or (isinstance(arr, list) and arr and isinstance(arr[0], kind)
                                                   and not isinstance(arr[0], bool))
        if arr is not None and (not numeric or len(arr) < n):
            raise GGUFFormatError(f"{source}: {K}{key} must be an array of {n} numbers")
    scores = [float(s) for s in scores[:n]] if scores is not None else [0.0] * n
    attrs = [TYPE_ATTR.get(t, 0) for t in types[:n]] if types is not None else [NORMAL] * n
    return texts, scores, attrs


class Tokenizer:
    """Text <-> token ids exactly as llama.cpp computes them for a GGUF's vocabulary.

    Attributes: n_vocab, model ('llama' | 'gpt2' | 'gemma4' | 'bert' | 't5'), pre, bos_id,
    eos_id (None when absent), eot_ids (ids that end a turn: eos/eot/eom and llama.cpp's
    end-of-generation guesses), add_bos, add_eos.
    """

    def __init__(self, meta: dict, source: str = "<metadata>"):
        model = meta.get(K + "model")
        if model is None:
            raise MissingKeyError(f"{source}: required metadata key '{K}model' is missing")
        if model not in SUPPORTED_MODELS:
            raise UnsupportedError(f"{source}: tokenizer model {K}model={model!r} is not "
                                   f"supported; supported: {', '.join(SUPPORTED_MODELS)}")
        texts, scores, attrs = _read_vocab(meta, source)
        index = {t: i for i, t in enumerate(texts)}
        if len(index) != len(texts):
            dup = next(t for i, t in enumerate(texts) if index[t] != i)
            raise GGUFFormatError(f"{source}: duplicate token {dup!r} in {K}tokens")
        spm, gemma4, wpm, ugm = (model == m for m in ("llama", "gemma4", "bert", "t5"))
        pre = None if spm or gemma4 or wpm or ugm else pre_tokenizer(meta.get(K + "pre"), source)
        ids = special_ids(meta, model, bool(pre and pre.no_bos), len(texts))
        self.eot_ids = frozenset(guess_roles(index, attrs, ids))
        self.model, self.n_vocab = model, len(texts)
        self.pre = "gemma4" if gemma4 else meta.get(K + "pre", "default")
        self.bos_id, self.eos_id, self._sep_id = ids["bos"], ids["eos"], ids["sep"]
        self._flags = _Flags(       # gemma4: llama.cpp adds BOS even where the file says not to
            add_bos=gemma4 or bool(meta.get(K + "add_bos_token",
                                            spm or wpm or bool(pre and pre.add_bos))),
            add_eos=bool(meta.get(K + "add_eos_token", False)),
            add_sep=bool(meta.get(K + "add_sep_token", wpm)),          # BERT's closing [SEP]
            add_space_prefix=bool(meta.get(K + "add_space_prefix", spm)) and not (gemma4 or wpm),
            clean_spaces=gemma4 or wpm or bool(pre and pre.clean_spaces))
        for flag, role in (("add_bos", "bos"), ("add_eos", "eos"), ("add_sep", "sep")):
            if getattr(self._flags, flag) and ids[role] is None:
                raise MissingKeyError(f"{source}: {K}{flag}_token is true but "
                                      f"{K}{role}_token_id is not set")
        special = sorted((i for i, a in enumerate(attrs) if a & SPECIAL),  # longest bytes first
                         key=lambda i: -len(texts[i].encode("utf-8", "surrogateescape")))
        strip_flags(meta, index, attrs, special)
        self._texts, self._attrs, self._order = texts, attrs, {i: k for k, i in enumerate(special)}
        self._by_first: dict[str, list[int]] = {}
        for i in special:
            self._by_first.setdefault(texts[i][0], []).append(i)
        self._pieces: dict[int, bytes] = {}
        self._backend = self._make_backend(meta, scores, ids["unk"], pre, source)

    def _make_backend(self, meta: dict, scores: list[float], unk: int | None, pre, source: str):
        """The merge engine of this vocabulary's model (backends.py)."""
        texts, attrs, model = self._texts, self._attrs, self.model
        if model == "llama":
            return SpmBackend(texts, scores, source, unk)
        if model == "t5":
            charsmap = bytes(b & 0xFF for b in meta.get(K + "precompiled_charsmap", []))
            matched = [bool(a & (NORMAL | USER_DEFINED | UNUSED)) for a in attrs]
            return UgmBackend(texts, scores, matched, [bool(a & USER_DEFINED) for a in attrs],
                              unk, charsmap, self._flags.add_space_prefix,
                              bool(meta.get(K + "remove_extra_whitespaces", False)), source)
        if model == "bert":
            lowercase = bool(meta.get(K + "normalizer.lowercase", True))
            return WpmBackend(texts, unk, lowercase,
                              bool(meta.get(K + "normalizer.strip_accents", lowercase)), source)
        if K + "merges" not in meta:
            raise MissingKeyError(f"{source}: required metadata key '{K}merges' is missing")
        if model == "gemma4":
            return SpmBpeBackend(texts, meta[K + "merges"], source)
        return BpeBackend(texts, meta[K + "merges"], pre, source)

    @classmethod
    def from_metadata(cls, meta: dict, source: str = "<metadata>") -> Tokenizer:
        """Build from a GGUF metadata dict; errors name `source` and the offending key."""
        return cls(meta, source)

    @property
    def add_bos(self) -> bool:
        return self._flags.add_bos

    @property
    def add_eos(self) -> bool:
        return self._flags.add_eos

    @property
    def add_space_prefix(self) -> bool:
        return self._flags.add_space_prefix

    @property
    def clean_spaces(self) -> bool:
        return self._flags.clean_spaces

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry of `token_id`, as stored (SentencePiece '▁', GPT-2 'Ġ' ...)."""
        return self._texts[self._check(token_id)]

    def is_control(self, token_id: int) -> bool:
        return bool(self._attrs[self._check(token_id)] & CONTROL)

    def is_eog(self, token_id: int) -> bool:
        return token_id in self.eot_ids

    def _check(self, token_id: int) -> int:
        if not 0 <= token_id < self.n_vocab:
            raise ModelInputError(f"token id {token_id} is outside the vocabulary "
                                  f"[0, {self.n_vocab})")
        return token_id

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]:
        """Token ids of `text`, equal to llama.cpp's `llama_tokenize`.

        Args:
            add_bos: None adds BOS (and EOS) as the file says (llama.cpp add_special=True);
                False adds neither; True always starts with BOS.
            special: parse control tokens written in the text (`<end_of_turn>`, ...); False
                treats them as plain text. User-defined tokens are always matched.
        """
        out: list[int] = []
        if add_bos or (add_bos is None and self._flags.add_bos):
            if self.bos_id is None:
                raise ModelInputError("this vocabulary has no BOS token to add")
            out.append(self.bos_id)
        after_special = True  # SentencePiece: a piece that starts the text or follows a special
        for part in self._partition(text, special):
            if isinstance(part, int):
                out.append(part)
                after_special = True
                continue
            if self.model == "llama" and self._flags.add_space_prefix and after_special:
                part = " " + part
            out += self._backend.encode(part)
            after_special = False
        if add_bos is not False and self._flags.add_eos:
            out.append(self.eos_id)
        if add_bos is not False and self._flags.add_sep:
            out.append(self._sep_id)
        return out

    def _candidates(self, text: str, special: bool) -> list[int]:
        """Special tokens occurring in `text`, in llama.cpp's order (longest text first)."""
        skip = 0 if special else CONTROL | UNKNOWN
        found = [i for c in set(text) for i in self._by_first.get(c, ())
                 if not self._attrs[i] & skip and self._texts[i] in text]
        return sorted(found, key=self._order.__getitem__)

    def _partition(self, text: str, special: bool) -> list[str | int]:
        """`tokenizer_st_partition`: text pieces (str) and special token ids (int), in order."""
        parts: list[tuple[int, int] | int] = [(0, len(text))] if text else []
        for tid in self._candidates(text, special):
            word, attr, out = self._texts[tid], self._attrs[tid], []
            for part in parts:
                if isinstance(part, int):
                    out.append(part)
                    continue
                start, end = part
                while (hit := text.find(word, start, end)) >= 0:
                    left = hit
                    while attr & LSTRIP and left > start and text[left - 1] in C_SPACE:
                        left -= 1
                    if left > start:
                        out.append((start, left))
                    out.append(tid)
                    start = hit + len(word)
                    while attr & RSTRIP and start < end and text[start] in C_SPACE:
                        start += 1
                if start < end:
                    out.append((start, end))
            parts = out
        return [p if isinstance(p, int) else text[p[0]:p[1]] for p in parts]

    # -- decoding ---------------------------------------------------------------------------

    def piece(self, token_id: int, special: bool = True) -> bytes:
        """llama.cpp's `token_to_piece`: the bytes of one token; control and unknown tokens
        are empty unless `special`."""
        attr = self._attrs[self._check(token_id)]
        if attr & (CONTROL | UNKNOWN) and not special:
            return b""
        cached = self._pieces.get(token_id)
        if cached is None:
            cached = self._pieces[token_id] = self._raw_piece(token_id, attr)
        return cached

    def _raw_piece(self, token_id: int, attr: int) -> bytes:
        text = self._texts[token_id]
        if attr & SPECIAL:
            return text.encode("utf-8", "surrogateescape")
        if attr & NORMAL:
            if self.model != "gpt2":                  # SentencePiece-style: '▁' is a space
                return text.replace("\u2581", " ").encode("utf-8", "surrogateescape")
            return gpt2_decode(text)
        if attr & BYTE:
            return bytes([int(text[3:5], 16)])
        return b""  # unused / undefined tokens have no text

    def decode_bytes(self, ids: list[int], skip_special: bool = False) -> bytes:
        """llama.cpp's `llama_detokenize` (remove_special=false,
        unparse_special=not skip_special), as bytes."""
        pieces = [self.piece(t, not skip_special) for t in ids]
        if pieces and self._flags.add_space_prefix and pieces[0][:1] == b" ":
            pieces[0] = pieces[0][1:]
        text = b"".join(pieces)
        return clean_spaces(text) if self._flags.clean_spaces else text

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        """Text of `ids` (invalid UTF-8 from partial byte tokens becomes U+FFFD)."""
        return self.decode_bytes(ids, skip_special).decode("utf-8", "replace")

    def stream_decoder(self, skip_special: bool = False) -> StreamDecoder:
        return StreamDecoder(self, skip_special)


class StreamDecoder:
    """Decode one token at a time: `push(id)` returns the newly completed text, never half a
    UTF-8 character; `flush()` returns what is held back. The concatenation equals
    `Tokenizer.decode` of all pushed ids."""

    # clean_spaces rules look at most 3 bytes past a space, so a cut after 4 non-space bytes
    # cannot change how either side is cleaned.
    _SAFE = 4

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self._tok, self._special = tokenizer, not skip_special
        self._first = True
        self._held = b""
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token_id: int) -> str:
        piece = self._tok.piece(token_id, self._special)
        if self._first and self._tok.add_space_prefix and piece[:1] == b" ":
            piece = piece[1:]
        self._first = False
        if not self._tok.clean_spaces:
            return self._utf8.decode(piece)
        self._held += piece
        cut = self._safe_cut(self._held)
        ready, self._held = self._held[:cut], self._held[cut:]
        return self._utf8.decode(clean_spaces(ready)) if ready else ""

    def _safe_cut(self, data: bytes) -> int:
        run = 0
        for k in range(len(data) - 1, -1, -1):
            run = run + 1 if data[k] != 0x20 else 0
            if run == self._SAFE:
                return k + self._SAFE
        return 0

    def flush(self) -> str:
        held, self._held = self._held, b""
        return self._utf8.decode(clean_spaces(held) if held else b"", final=True)


def load_tokenizer(path) -> Tokenizer:
    """The tokenizer of a GGUF file (vocabulary-only files work: no tensor is read)."""
    return Tokenizer.from_metadata(open_gguf(path).metadata, str(path))
