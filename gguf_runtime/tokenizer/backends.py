"""The two merge engines behind `Tokenizer`, each fed one piece of text between special tokens.

- `SpmBackend` ('llama' vocabularies): llama.cpp's SPM loop repeatedly merges the adjacent pair
  whose concatenation is the best-scoring token (leftmost on ties), then maps characters that
  are no token to `<0xNN>` byte tokens. sentencepiece's BPE model runs that same loop, so we
  hand it a ModelProto written from the GGUF arrays, with every token a NORMAL piece (in
  llama.cpp any token can be a merge result: control, user-defined and unused ones included)
  except the `<0xNN>` byte tokens, which drive sentencepiece's byte fallback.
- `BpeBackend` ('gpt2' vocabularies): the `tokenizers` library with the `tokenizer.ggml.pre`
  regex splits, the GPT-2 byte-to-unicode map and the merges ranked by their order in the file.
- `WpmBackend` ('bert' vocabularies): the `tokenizers` library's BERT normalizer, pre-tokenizer
  and WordPiece, with llama.cpp's '▁'-marks-a-word-start vocabulary turned into WordPiece's
  '##'-marks-a-continuation one.
- `UgmBackend` ('t5' vocabularies): sentencepiece's Unigram model, normalized by the
  vocabulary's own precompiled charsmap.
- `SpmBpeBackend` ('gemma4' vocabularies): ranked merges as BpeBackend, but over the raw UTF-8
  characters with spaces escaped to '▁' (SentencePiece style), cut only at newline runs, and
  `<0xNN>` byte tokens for characters that are no token.
Plus llama.cpp's byte-level helpers for the way back: `gpt2_decode`, `clean_spaces`.
"""

from __future__ import annotations

import re
import struct

import sentencepiece
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from ..errors import UnsupportedError
from .pretokenizers import PreTokenizer, onig_pattern

_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


def _gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map (llama.cpp's `unicode_byte_to_utf8_map`)."""
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    moved = [b for b in range(256) if b not in kept]
    table = {b: chr(b) for b in kept}
    table.update({b: chr(256 + n) for n, b in enumerate(moved)})
    return table


BYTE_TO_UNICODE = _gpt2_bytes_to_unicode()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}


# sentencepiece_model.proto, the fields we write:
#   ModelProto      { repeated SentencePiece pieces = 1; TrainerSpec trainer_spec = 2;
#                     NormalizerSpec normalizer_spec = 3; }
#   SentencePiece   { string piece = 1; float score = 2; Type type = 3; }  NORMAL=1 UNKNOWN=2
#                                                                          CONTROL=3 BYTE=6
#   TrainerSpec     { ModelType model_type = 3 (UNIGRAM=1, BPE=2); bool byte_fallback = 35; }
#   NormalizerSpec  { string name = 1; bytes precompiled_charsmap = 2; bool add_dummy_prefix = 3;
#                     bool remove_extra_whitespaces = 4; bool escape_whitespaces = 5; }
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6
_UNIGRAM, _BPE = 1, 2


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _message(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def spm_model_proto(pieces: list[bytes], scores: list[float], kinds: list[int],
                    model_type: int = _BPE, charsmap: bytes = b"", add_dummy_prefix: bool = False,
                    remove_extra_whitespaces: bool = False, escape_whitespaces: bool = False) -> bytes:
    """A serialized sentencepiece ModelProto (BPE unless `model_type`); `kinds` are the pieces'
    sentencepiece types (_NORMAL, _UNKNOWN, _CONTROL, _BYTE); byte fallback iff any _BYTE. The
    normalizer is the identity unless a precompiled `charsmap` is given, then the whitespace
    flags (escaping a space writes '▁')."""
    packed = struct.pack(f"<{len(scores)}f", *scores)
    lengths = [bytes([n]) for n in range(128)]  # one-byte varints, the common case
    records = []
    for i, piece in enumerate(pieces):
        kind = bytes([3 << 3, kinds[i]])
        n = len(piece)
        body = b"".join((b"\x0a", lengths[n] if n < 128 else _varint(n), piece, b"\x15",
                         packed[4 * i:4 * i + 4], kind))
        n = len(body)
        records.append(b"\x0a" + (lengths[n] if n < 128 else _varint(n)) + body)
    trainer = bytes([3 << 3, model_type]) + _varint(35 << 3) + bytes([_BYTE in kinds])
    normalizer = (_message(1, b"user" if charsmap else b"identity")
                  + (_message(2, charsmap) if charsmap else b"")
                  + bytes([3 << 3, add_dummy_prefix, 4 << 3, remove_extra_whitespaces,
                           5 << 3, escape_whitespaces]))
    return b"".join(records) + _message(2, trainer) + _message(3, normalizer)


def _sentencepiece(proto: bytes, source: str) -> sentencepiece.SentencePieceProcessor:
    """A processor for the serialized ModelProto; UnsupportedError naming `source` if refused."""
    try:
        return sentencepiece.SentencePieceProcessor(model_proto=proto)
    except (RuntimeError, OSError) as e:
        raise UnsupportedError(f"{source}: sentencepiece rejects this vocabulary: {e}") from None


class SpmBackend:
    """SentencePiece-style merges by token score, with `<0xNN>` byte fallback."""

    def __init__(self, texts: list[str], scores: list[float], source: str,
                 unk_id: int | None = None):
        pieces = [t.encode("utf-8", "surrogateescape") for t in texts]
        # llama.cpp's byte fallback looks byte tokens up by their text, whatever their type
        kinds = [_BYTE if len(t) == 6 and _BYTE_PIECE.fullmatch(t) else _NORMAL for t in texts]
        if _BYTE not in kinds and unk_id is not None:
            kinds[unk_id] = _UNKNOWN       # sentencepiece needs one unless it has byte fallback
        self._sp = _sentencepiece(spm_model_proto(pieces, scores, kinds), source)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (spaces already part of it; escaped to '▁' here)."""
        return [i for i in self._sp.encode(text.replace(" ", "\u2581")) if i >= 0]


class UgmBackend:
    """Unigram ('t5' vocabularies), llama.cpp's UGM: the text normalized by the vocabulary's
    precompiled charsmap (spaces escaped to '▁', a '▁' before the text if add_space_prefix, runs
    of spaces merged if remove_extra_whitespaces), then the Viterbi-best split by token scores
    (user-defined tokens score 0; a character no token covers is the unknown token at the lowest
    score - 10, runs of them one token). sentencepiece's Unigram model runs that algorithm; we
    hand it a ModelProto written from the GGUF arrays."""

    def __init__(self, texts: list[str], scores: list[float], matched: list[bool],
                 user_defined: list[bool], unk_id: int | None, charsmap: bytes,
                 add_space_prefix: bool, remove_extra_whitespaces: bool, source: str):
        """matched[i]: token i can be part of a split (llama.cpp: normal, user-defined, unused)."""
        if unk_id is None:
            raise UnsupportedError(f"{source}: a Unigram ('t5') vocabulary needs an unknown token")
        kinds = [_NORMAL if m else _CONTROL for m in matched]
        kinds[unk_id] = _UNKNOWN
        scores = [0.0 if u else sc for u, sc in zip(user_defined, scores)]
        proto = spm_model_proto([t.encode("utf-8", "surrogateescape") for t in texts], scores,
                                kinds, _UNIGRAM, charsmap, add_space_prefix,
                                remove_extra_whitespaces, escape_whitespaces=True)
        self._sp = _sentencepiece(proto, source)

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)


def bpe_merge_pairs(merges: list[str], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """The usable (left, right) merges in rank order.

    llama.cpp splits "left right" at the first space after the first character and keeps the
    first rank of a repeated pair. `tokenizers` needs both halves and their concatenation in
    the vocabulary; a merge without them could only ever produce a non-token.
    """
    pairs: dict[tuple[str, str], None] = {}
    for merge in merges:
        cut = merge.find(" ", 1)
        if cut > 0:
            a, b = merge[:cut], merge[cut + 1:]
            if a in vocab and b in vocab and a + b in vocab:
                pairs.setdefault((a, b))
    return list(pairs)


class BpeBackend:
    """Byte-level BPE: pre-tokenizer regex splits, GPT-2 byte map, ranked merges."""

    def __init__(self, texts: list[str], merges: list[str], pre: PreTokenizer, source: str):
        vocab = {t: i for i, t in enumerate(texts)}
        try:
            model = models.BPE(vocab=vocab, merges=bpe_merge_pairs(merges, vocab),
                               ignore_merges=pre.ignore_merges)
            splits = [pre_tokenizers.Split(Regex(onig_pattern(r)), behavior="isolated")
                      for r in pre.regexes]
        except Exception as e:  # tokenizers raises plain Exception subclasses from Rust
            raise UnsupportedError(f"{source}: cannot build the BPE tokenizer: {e}") from None
        self._tok = Tokenizer(model)
        self._tok.pre_tokenizer = pre_tokenizers.Sequence(
            [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids


class WpmBackend:
    """WordPiece as llama.cpp's WPM: clean the text (drop control characters, NUL, U+FFFD), NFD and
    accents dropped if `strip_accents`, lowercase if `lowercase`, split at whitespace and around
    punctuation, ASCII symbols and CJK ideographs; each word is '▁' + word cut greedily into the
    longest tokens from its start, or the unknown token if some part matches none."""

    def __init__(self, texts: list[str], unk_id: int | None, lowercase: bool, strip_accents: bool,
                 source: str):
        vocab: dict[str, int] = {}
        for i, t in enumerate(texts):   # llama.cpp: '▁x' starts a word; WordPiece: '##x' goes on
            key = t[1:] if t.startswith("\u2581") else "##" + t
            if key not in ("", "##"):
                vocab.setdefault(key, i)
        if unk_id is None:
            raise UnsupportedError(f"{source}: a WordPiece ('bert') vocabulary needs an unknown token")
        unk = f"##{texts[unk_id]}"
        vocab[unk] = unk_id
        try:
            model = models.WordPiece(vocab=vocab, unk_token=unk, continuing_subword_prefix="##",
                                     max_input_chars_per_word=1 << 30)   # llama.cpp has no limit
        except Exception as e:  # tokenizers raises plain Exception subclasses from Rust
            raise UnsupportedError(f"{source}: cannot build the WordPiece tokenizer: {e}") from None
        self._tok = Tokenizer(model)
        self._tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents,
            lowercase=lowercase)
        self._tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids


class SpmBpeBackend:
    """SentencePiece-style BPE (llama.cpp's gemma4 pre-tokenizer): the text with spaces escaped to
    '▁' is cut into runs of newlines and runs of anything else; a newline run that is a token is
    that token, every other run goes through the ranked merges over its UTF-8 characters, and a
    character that is no token becomes its `<0xNN>` byte tokens."""

    _RUNS = re.compile(r"[^\n]+|\n+")

    def __init__(self, texts: list[str], merges: list[str], source: str):
        self._vocab = {t: i for i, t in enumerate(texts)}
        try:
            model = models.BPE(vocab=self._vocab, merges=bpe_merge_pairs(merges, self._vocab),
                               byte_fallback=True)
        except Exception as e:  # tokenizers raises plain Exception subclasses from Rust
            raise UnsupportedError(f"{source}: cannot build the BPE tokenizer: {e}") from None
        self._tok = Tokenizer(model)

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for run in self._RUNS.findall(text.replace(" ", "\u2581")):
            if run[0] == "\n" and run in self._vocab:
                out.append(self._vocab[run])
            else:
                out += self._tok.encode(run, add_special_tokens=False).ids
        return out


# -- detokenize helpers ----------------------------------------------------------------------

def gpt2_decode(text: str) -> bytes:
    """llama.cpp's `llama_decode_text`: GPT-2 byte characters back to bytes."""
    out = bytearray()
    for ch in text:
        byte = UNICODE_TO_BYTE.get(ch)
        if byte is not None:
            out.append(byte)
        else:
            utf8 = ch.encode("utf-8", "replace")
            out += b"[UNK_BYTE_0x" + utf8.hex().encode() + text.encode("utf-8", "replace") + b"]"
    return bytes(out)


def clean_spaces(text: bytes) -> bytes:
    """llama.cpp's detokenize clean-up (clean_up_tokenization_spaces), byte for byte:
    " ?", " !", " .", " ," lose the space; " ' " becomes "'"; " 's", " 'm", " 're", " 've"
    lose the space."""
    out = bytearray(text[:1])
    for i in range(1, len(text)):
        if text[i - 1] == 0x20 and text[i] in b"?!.,":
            out.pop()
        out.append(text[i])
    buf, out, i = bytearray(out), bytearray(out[:1]), 1
    while i < len(buf):
        x = buf[i]
        if x == 0x27 and i + 1 < len(buf) and buf[i - 1] == 0x20 and buf[i + 1] == 0x20:
            out.pop()
            i += 1
            buf[i] = 0  # the space after is dropped and no longer counts as a space
        out.append(x)
        i += 1
    buf, out = out, bytearray(out[:1])
    for i in range(1, len(buf)):
        if buf[i - 1] == 0x20 and buf[i] == 0x27 and i + 1 < len(buf):
            nxt = bytes(buf[i + 1:i + 3])
            if nxt[:1] in (b"s", b"m") or (len(nxt) == 2 and nxt in (b"re", b"ve")):
                out.pop()
        out.append(buf[i])
    return bytes(out)
