"""Rewrite a GGUF as another architecture (the hand-made files of families with no
transformers class: tests/test_qwen1.py, tests/test_deepseek1.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter


def rewrite_gguf(src: Path, out: Path, arch: str, keys: Callable[[str, object], tuple[str, object]],
                 tensors: Callable[[dict], dict[str, tuple[np.ndarray, object]]],
                 extra: Callable[[GGUFWriter], None] = lambda w: None) -> Path:
    """`src`'s keys renamed / changed by keys(name, value) -> (name, value) and its tensors by
    tensors({name: ReaderTensor}) -> {name: (data, GGML type)}, written as `arch`; extra(w)
    adds keys."""
    r = GGUFReader(src)
    w = GGUFWriter(out, arch)
    for field in r.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        name, value = keys(field.name, field.contents())
        sub = {"sub_type": field.types[-1]} if field.types[0] == GGUFValueType.ARRAY else {}
        w.add_key_value(name, value, field.types[0], **sub)
    extra(w)
    for name, (data, qtype) in tensors({t.name: t for t in r.tensors}).items():
        w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def renamed_prefix(old: str, new: str) -> Callable[[str, object], tuple[str, object]]:
    """keys() for rewrite_gguf: `{old}.*` -> `{new}.*`, values kept."""
    return lambda name, value: (new + name[len(old):] if name.startswith(old + ".") else name, value)
