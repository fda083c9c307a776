"""Which GGML type each tensor of a file gets: llama.cpp's rules for the file types we write.

    ft = file_type("Q4_K_M")                        # FileType: name, general.file_type, default
    types = choose_types(specs, ft, info)           # {tensor name: GGMLQuantizationType}

A port of llama.cpp's src/llama-quant.cpp (`tensor_allows_quantization`, `tensor_get_category`,
`llama_tensor_get_type_impl`, `tensor_type_fallback`) for the file types in FILE_TYPES, without
an importance matrix or user overrides, as `llama-quantize IN OUT TYPE` decides:
- only tensors of 2+ dimensions whose name ends in "weight" and is no norm, router
  (ffn_gate_inp) or position embedding are quantized; every other tensor keeps its type;
- output.weight, and token_embd.weight when there is no output.weight (tied), take Q6_K, or
  Q8_0 when the row is not a whole number of the file's default blocks (Q8_0 files keep Q8_0);
- Q4_K_M / Q5_K_M give Q6_K to attn_v (and attn_qkv, attn_kv_b) and ffn_down in the first
  and last eighth of the layers and every third layer between (`use_more_bits`);
  Q4_K_S gives Q5_K to the first four attn_v and to ffn_down of the first eighth of layers;
- 8-expert models: attn_v and attn_k Q8_0, attn_output Q5_K (Q4_K_S/M); 70B models: a Q4_K
  attn_v becomes Q5_K;
- a row that is not a multiple of the chosen type's block falls back: Q4_K -> Q5_0,
  Q5_K -> Q5_1, Q6_K -> Q8_0, a 32-block type -> F16 (and F16 when the fallback does not fit).
llama.cpp counts attn_v and ffn_down tensors in its own tensor order (by layer number, then
name) and uses the count as the layer index (dense models); `choose_types` walks the same order.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Iterable

from gguf import GGML_QUANT_SIZES, LlamaFileType
from gguf import GGMLQuantizationType as T

from ..errors import UnsupportedError

FLOAT_TYPES = (T.F32, T.F16, T.BF16)
L = LlamaFileType


@dataclass(frozen=True)
class FileType:
    """One output type as llama-quantize names it: `general.file_type` and the default type."""

    name: str
    ftype: LlamaFileType     # written as general.file_type
    default: T               # type of every quantizable weight before the per-tensor rules

    @property
    def quantized(self) -> bool:
        return self.default not in FLOAT_TYPES


FILE_TYPES = {ft.name: ft for ft in [
    FileType("F32", L.ALL_F32, T.F32), FileType("F16", L.MOSTLY_F16, T.F16),
    FileType("BF16", L.MOSTLY_BF16, T.BF16), FileType("Q8_0", L.MOSTLY_Q8_0, T.Q8_0),
    FileType("Q4_0", L.MOSTLY_Q4_0, T.Q4_0), FileType("Q4_1", L.MOSTLY_Q4_1, T.Q4_1),
    FileType("Q5_0", L.MOSTLY_Q5_0, T.Q5_0), FileType("Q5_1", L.MOSTLY_Q5_1, T.Q5_1),
    FileType("Q4_K_S", L.MOSTLY_Q4_K_S, T.Q4_K), FileType("Q4_K_M", L.MOSTLY_Q4_K_M, T.Q4_K),
    FileType("Q5_K_S", L.MOSTLY_Q5_K_S, T.Q5_K), FileType("Q5_K_M", L.MOSTLY_Q5_K_M, T.Q5_K),
    FileType("Q6_K", L.MOSTLY_Q6_K, T.Q6_K),
]}
ALIASES = {"Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}      # llama-quantize's own aliases
TYPE_NAMES = [*FILE_TYPES, *ALIASES]


def file_type(name: str) -> FileType:
    """The FileType called `name` (case-insensitive; Q4_K / Q5_K mean Q4_K_M / Q5_K_M)."""
    key = str(name).upper()
    key = ALIASES.get(key, key)
    if key not in FILE_TYPES:
        raise UnsupportedError(f"output type {name!r} is not supported; supported: "
                               f"{', '.join(TYPE_NAMES)}")
    return FILE_TYPES[key]


@dataclass(frozen=True)
class TensorSpec:
    """A tensor to place: GGUF name, PyTorch-order shape, its type before quantization."""

    name: str
    shape: tuple[int, ...]
    base: T


@dataclass(frozen=True)
class ModelInfo:
    """The hyperparameters llama.cpp's rules look at."""

    arch: str
    n_layer: int
    n_expert: int = 0
    n_head: int = 0
    n_head_kv: int = 0

    @property
    def is_70b(self) -> bool:
        """llama.cpp's LLM_TYPE_70B, the only model size its rules ask about."""
        if self.arch == "llama":
            return self.n_layer == 80 and self.n_expert != 8 and self.n_head != self.n_head_kv
        return (self.arch, self.n_layer) in {("qwen2", 80), ("deci", 80), ("olmo", 80),
                                             ("jais2", 68)}


# ------------------------------------------------------------------ which tensors, what kind
_NOT_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup",
                  "laurel", "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight",
                  "indexer.k_proj.weight", "indexer.q_proj.weight", "time_mix_first.weight",
                  "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
                  "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
                  "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight",
                  "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
                  "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight",
                  ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos",
                  ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd")
# tensor_get_category: the first substring found decides (output/token_embd match exactly).
_CATEGORIES = (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"),
               ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"),
               ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
               ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down"))
_LAYER = re.compile(r"blk\.(-?\d+)\.")


def allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    """tensor_allows_quantization: 2+ dims (trailing ne of 1 do not count), a weight, no norm..."""
    dims = len(shape) - next((i for i, d in enumerate(shape) if d != 1), len(shape) - 1)
    return (dims >= 2 and name.endswith("weight") and name not in
            ("position_embd.weight", "token_types.weight")
            and not any(s in name for s in _NOT_QUANTIZED))


def category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    return next((cat for s, cat in _CATEGORIES if s in name), "other")


def _llama_order(name: str) -> tuple[int, str]:
    """llama_model_loader's weight_name_comparer: layer number (-1 outside blocks), then name."""
    m = _LAYER.match(name)
    return (int(m[1]) if m else -1, name)


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """The first and last eighth of the layers, and every third layer in between."""
    return (i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8
            or (i_layer - n_layers // 8) % 3 == 2)


# ------------------------------------------------------------------ the rules
class _Counters:
    """quantize_state_impl's running counts (attn_v-like and ffn_down tensors seen so far)."""

    def __init__(self, specs: list[TensorSpec], info: ModelInfo):
        cats = [category(s.name) for s in specs]
        self.n_attn_v, self.i_attn_v = cats.count("attn_v"), 0
        self.n_ffn_down, self.i_ffn_down = info.n_layer, 0
        self.tied = "output" not in cats


def choose_types(specs: Iterable[TensorSpec], ft: FileType, info: ModelInfo,
                 pure: bool = False, fallbacks: list | None = None) -> dict[str, T]:
    """{name: GGML type} for every tensor, as llama-quantize to `ft` decides.

    Args:
        specs: every tensor of the file (the rules count attn_v tensors and look for output).
        ft: the output file type.
        info: the hyperparameters the rules use.
        pure: llama-quantize --pure: every quantizable tensor takes ft.default (fallbacks apply).
        fallbacks: where given, gets (name, wanted type, chosen type, row length) for each
            tensor whose rows the wanted type's block does not divide (see fallback_notes).
    Returns a dict in llama.cpp's decision order; tensors not quantized keep `spec.base`.
    """
    specs = sorted(specs, key=lambda s: _llama_order(s.name))
    qs, out = _Counters(specs, info), {}
    for s in specs:
        new = s.base
        if allows_quantization(s.name, s.shape):
            new = ft.default
            if ft.quantized:
                if not pure:
                    new = _mix_rule(qs, new, s, ft.ftype, info)
                wanted, new = new, fallback(new, s.shape[-1])
                if new != wanted and fallbacks is not None:
                    fallbacks.append((s.name, wanted, new, s.shape[-1]))
        out[s.name] = new
    return out


def _mix_rule(qs: _Counters, new: T, s: TensorSpec, ftype: L, info: ModelInfo) -> T:
    """llama_tensor_get_type_impl, the branches reachable from FILE_TYPES."""
    cat, falcon = category(s.name), info.arch == "falcon"
    if cat == "output" or (qs.tied and cat == "token_embd"):
        if falcon or s.shape[-1] % GGML_QUANT_SIZES[new][0]:
            return T.Q8_0
        return new if new == T.Q8_0 else T.Q6_K
    if cat == "attn_v":
        return _attn_v(qs, new, ftype, info)
    if cat == "attn_k" and info.n_expert == 8:
        return T.Q8_0
    if cat == "ffn_down":
        return _ffn_down(qs, new, s.name, ftype, info)
    if (cat == "attn_output" and not falcon and info.n_expert == 8
            and ftype in (L.MOSTLY_Q4_K_S, L.MOSTLY_Q4_K_M)):
        return T.Q5_K
    return new


def _attn_v(qs: _Counters, new: T, ftype: L, info: ModelInfo) -> T:
    if (ftype in (L.MOSTLY_Q4_K_M, L.MOSTLY_Q5_K_M)
            and use_more_bits(qs.i_attn_v, qs.n_attn_v)):
        new = T.Q6_K
    elif ftype == L.MOSTLY_Q4_K_S and qs.i_attn_v < 4:
        new = T.Q5_K
    if info.is_70b and new in (T.Q3_K, T.Q4_K):
        new = T.Q5_K      # 70B: attn_v is 8x smaller than attn_q, more bits cost little
    if info.n_expert == 8:
        new = T.Q8_0
    qs.i_attn_v += 1
    return new


def _ffn_down(qs: _Counters, new: T, name: str, ftype: L, info: ModelInfo) -> T:
    i_layer, n_layer = qs.i_ffn_down, qs.n_ffn_down
    if info.n_expert > 1:        # experts' tensors are not one per layer in order: parse it
        m = _LAYER.match(name)
        if m is None:
            raise UnsupportedError(f"tensor {name!r}: cannot find its layer number")
        i_layer = int(m[1])
    if ftype == L.MOSTLY_Q4_K_M:
        if info.arch == "falcon":
            new = (T.Q6_K if i_layer < n_layer // 16 else
                   T.Q5_K if use_more_bits(i_layer, n_layer) else T.Q4_K)
        elif use_more_bits(i_layer, n_layer):
            new = T.Q6_K
    elif ftype == L.MOSTLY_Q5_K_M and use_more_bits(i_layer, n_layer):
        new = T.Q6_K
    elif ftype == L.MOSTLY_Q4_K_S and info.arch != "falcon" and i_layer < n_layer // 8:
        new = T.Q5_K
    qs.i_ffn_down += 1
    return new


_FALLBACK = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0, T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0}


def print_note(line: str) -> None:
    """The default `notice` of convert / requantize: one "note:" line on stderr."""
    print(f"note: {line}", file=sys.stderr)


def fallback_notes(fallbacks: list) -> list[str]:
    """One line per (wanted, chosen, row length) of choose_types' fallbacks, e.g. "3 tensors
    (blk.0.ffn_down.weight, ...): rows of 576 values are not a multiple of Q4_K's 256: Q5_0"."""
    groups: dict[tuple, list[str]] = {}
    for name, wanted, got, n_cols in fallbacks:
        groups.setdefault((wanted, got, n_cols), []).append(name)
    lines = []
    for (wanted, got, n_cols), names in groups.items():
        shown = ", ".join(names[:2]) + (", ..." if len(names) > 2 else "")
        lines.append(f"{len(names)} tensor(s) ({shown}): rows of {n_cols} values are not a multiple "
                     f"of {wanted.name}'s {GGML_QUANT_SIZES[wanted][0]}: {got.name} instead (as llama.cpp)")
    return lines


def fallback(qtype: T, n_cols: int) -> T:
    """tensor_type_fallback: a type whose block divides the row length n_cols."""
    if n_cols % GGML_QUANT_SIZES[qtype][0] == 0:
        return qtype
    qtype = _FALLBACK.get(qtype, qtype)
    return qtype if n_cols % GGML_QUANT_SIZES[qtype][0] == 0 else T.F16
