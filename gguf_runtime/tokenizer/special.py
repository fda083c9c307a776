"""Token attributes, special-token ids and end-of-generation tokens as llama.cpp's
`llama_vocab::impl::load` sets them: the GGUF token_type -> attribute map, per-model default ids,
the id keys, and llama.cpp's guesses from token text (`<end_of_turn>`, `<|im_end|>`, ... become
control; which texts end generation), plus its per-model lstrip/rstrip quirks.
"""

from __future__ import annotations

K = "tokenizer.ggml."

# llama_token_attr bits; GGUF token_type (gguf.TokenType 1..6) -> attribute.
UNKNOWN, UNUSED, NORMAL, CONTROL, USER_DEFINED, BYTE = 1, 2, 4, 8, 16, 32
LSTRIP, RSTRIP = 128, 256
TYPE_ATTR = {1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: USER_DEFINED, 5: UNUSED, 6: BYTE}
SPECIAL = CONTROL | USER_DEFINED | UNKNOWN  # cut out of the text before merging
C_SPACE = " \t\n\v\f\r"  # C isspace(), used by lstrip / rstrip

# id keys (role -> key suffix; deprecated prefix/suffix/middle last, as llama.cpp reads them)
_ID_KEYS = (("bos", "bos"), ("eos", "eos"), ("eot", "eot"), ("eom", "eom"), ("unk", "unknown"),
            ("sep", "seperator"), ("pad", "padding"), ("mask", "mask"), ("fim_pre", "fim_pre"),
            ("fim_suf", "fim_suf"), ("fim_mid", "fim_mid"), ("fim_pad", "fim_pad"),
            ("fim_rep", "fim_rep"), ("fim_sep", "fim_sep"), ("fim_pre", "prefix"),
            ("fim_suf", "suffix"), ("fim_mid", "middle"))
# Roles llama.cpp guesses from token text when no id key set them; a match becomes control.
_GUESSED = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
            "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>",
            "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                "▁<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                "▁<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                "▁<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
_EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
              "<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>",
              "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>",
              "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[")
_ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")  # gpt-oss


def special_ids(meta: dict, model: str, no_bos: bool, n: int) -> dict[str, int | None]:
    """bos/eos/... ids: llama.cpp's per-model defaults, then the id keys that are in range."""
    ids: dict[str, int | None] = dict.fromkeys(r for r, _ in _ID_KEYS)
    ids.update({"llama": {"bos": 1, "eos": 2, "unk": 0}, "gpt2": {"bos": 11, "eos": 11},
                "bert": {"bos": 101, "unk": 100, "sep": 102, "pad": 0, "mask": 103},
                "t5": {"eos": 1, "unk": 2, "pad": 0}}.get(model, {}))
    if no_bos:
        ids["bos"] = None
    ids = {r: (i if i is not None and i < n else None) for r, i in ids.items()}
    for role, key in _ID_KEYS:
        value = meta.get(f"{K}{key}_token_id")
        if isinstance(value, int) and 0 <= value < n:
            ids[role] = value
    return ids


def guess_roles(index: dict[str, int], attrs: list[int], ids: dict) -> set[int]:
    """llama.cpp's text-based guesses: fills unset roles, marks guesses control, returns EOG."""
    for role, names in _GUESSED.items():
        found = [index[t] for t in names if t in index]
        if ids[role] is None and found:
            ids[role] = found[0]
            attrs[found[0]] |= CONTROL
    eog = {ids[r] for r in ("fim_pad", "fim_rep", "fim_sep") if ids[r] is not None}
    for name in _EOG_TEXTS:
        if name in index:
            eog.add(index[name])
            attrs[index[name]] |= CONTROL
    for name in _ALWAYS_RENDERED:
        if name in index:
            attrs[index[name]] = USER_DEFINED
    eog |= {ids[r] for r in ("eos", "eot", "eom") if ids[r] is not None}
    by_text = {name: index[name] for name in ("<|return|>", "<|call|>", "<|calls|>", "<|flush|>",
                                              "<|end|>", "<|tool_response>", "</s>")
               if index.get(name) in eog}
    has = by_text.__contains__
    ends_message = has("<|return|>") or has("<|flush|>")
    if has("<|end|>") and ends_message and (has("<|call|>") or has("<|calls|>")):
        eog.discard(by_text["<|end|>"])  # harmony / solar-open: <|end|> ends a message only
        attrs[by_text["<|end|>"]] = USER_DEFINED
    if has("<|tool_response>") and has("</s>"):
        eog.discard(by_text["</s>"])  # gemma4: </s> is plain text
        attrs[by_text["</s>"]] = NORMAL
    return eog


def strip_flags(meta: dict, index: dict[str, int], attrs: list[int], special: list[int]) -> None:
    """llama.cpp's per-model lstrip/rstrip attributes (phi-3, jina-v2)."""
    name = str(meta.get("general.name", "")).lower()
    pre, arch = str(meta.get(K + "pre", "")), str(meta.get("general.architecture", ""))
    if any(s in pre for s in ("jina-v2-de", "jina-v2-es", "jina-v2-code")) or \
            any(s in arch for s in ("nomic-bert-moe", "jina-bert-v3")):
        if "<mask>" in index:
            attrs[index["<mask>"]] |= LSTRIP
    elif "phi-3" in name or "phi3" in name:
        for i in special:
            attrs[i] |= RSTRIP
        for text in ("</s>", "<unk>", "<s>", "<|endoftext|>"):
            if text in index:
                i = index[text]
                attrs[i] = attrs[i] | RSTRIP if text == "</s>" else attrs[i] & ~RSTRIP


