"""Which Hugging Face tensors make each GGUF tensor: one to one, experts stacked, halves, kv_b.

    recipes = plan_recipes(family, h, src.names())     # [Recipe(GGUF name, HF sources, part)]
    shape = recipe_shape(r, src)                        # from the safetensors headers only
    data = read_recipe(r, src, h)                       # float32, one GGUF tensor

As llama.cpp's convert_hf_to_gguf.py (Qwen2MoeModel, LlamaModel, OlmoeModel, GraniteMoeModel,
DeepseekV2Model `modify_tensors`):
- per-expert matrices `model.layers.{i}.(mlp|block_sparse_moe).experts.{e}.{proj}.weight`
  (F, D) or (D, F) become one 3-D stack per projection, (E, F, D) `ffn_{gate,up}_exps` and
  (E, D, F) `ffn_down_exps`, expert e at index e (Mixtral's w1/w3/w2 = gate/up/down);
- fused tensors are split along their rows (dim -2) into [gate; up]: Granite-MoE's
  `input_linear` (E, 2F, D) and `shared_mlp.input_linear` (2Fs, D), transformers' fused
  `mlp.experts.gate_up_proj` (E, 2F, D);
- DeepSeek's `kv_b_proj` (H * (N + Dv), R) becomes attn_k_b (H, R, N) (per head, transposed)
  and attn_v_b (H, Dv, R), the absorbed form of multi-head latent attention.
A stack is assembled in one preallocated (E, ...) tensor, reading one expert at a time, so
memory stays about one stack. A tensor split in two is read once for each half.

Legend: E experts, F expert width, D model width, H heads, N/P no-rope/rope query widths,
R kv_lora_rank, Dv value width per head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from .arch import Family, HParams, gguf_name
from .source import ConvertError, HFSource, ShapeMismatchError

Part = Callable[[torch.Tensor, HParams], torch.Tensor]

_EXPERT_RE = re.compile(r"model\.layers\.(\d+)\.(?:mlp|block_sparse_moe)\.experts\.(\d+)\."
                        r"(\w+)\.weight")
EXPERT_PROJ = {"gate_proj": "ffn_gate_exps", "up_proj": "ffn_up_exps",
               "down_proj": "ffn_down_exps",
               "w1": "ffn_gate_exps", "w3": "ffn_up_exps", "w2": "ffn_down_exps"}   # mixtral


def _half(i: int) -> Part:
    """Rows [0, n/2) (i = 0: gate) or [n/2, n) (i = 1: up) of (..., n, C)."""
    return lambda t, h: t.chunk(2, dim=-2)[i]


def _kv_b(i: int) -> Part:
    """DeepseekV2Model: kv_b (H * (N + Dv), R) -> k_b (H, R, N) (i = 0) or v_b (H, Dv, R)."""
    def part(t: torch.Tensor, h: HParams) -> torch.Tensor:
        n, dv = int(h.find("qk_nope_head_dim")), int(h.find("v_head_dim"))
        k_b, v_b = t.view(h.n_head, n + dv, t.shape[-1]).split([n, dv], dim=1)
        return k_b.transpose(1, 2) if i == 0 else v_b
    return part


_GATE_UP = (("ffn_gate_exps.weight", _half(0)), ("ffn_up_exps.weight", _half(1)))
# Block-relative HF name -> (GGUF name in the block, part) for each tensor it makes.
SPLITS: dict[str, tuple[tuple[str, Part], ...]] = {
    "block_sparse_moe.input_linear.weight": _GATE_UP,                  # granitemoe
    "mlp.experts.gate_up_proj": _GATE_UP,                              # fused experts
    "mlp.experts.gate_up_proj.weight": _GATE_UP,
    "shared_mlp.input_linear.weight": (("ffn_gate_shexp.weight", _half(0)),
                                       ("ffn_up_shexp.weight", _half(1))),
    "self_attn.kv_b_proj.weight": (("attn_k_b.weight", _kv_b(0)),
                                   ("attn_v_b.weight", _kv_b(1))),
}
_SPLIT_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")


@dataclass(frozen=True)
class Recipe:
    """One GGUF tensor: its HF sources (several: experts, stacked in order) and a part."""

    name: str
    sources: tuple[str, ...]
    part: Part | None = None

    @property
    def label(self) -> str:
        """The source as error messages name it."""
        if len(self.sources) == 1:
            return self.sources[0]
        first = self.sources[0]
        m = _EXPERT_RE.fullmatch(first)
        return f"{first[:m.start(2)]}*{first[m.end(2):]} ({len(self.sources)} experts)"


def plan_recipes(family: Family, h: HParams, names: Iterable[str]) -> list[Recipe]:
    """A Recipe per GGUF tensor; ConvertError when a layer's experts are incomplete."""
    recipes: list[Recipe] = []
    experts: dict[tuple[int, str], dict[int, str]] = {}      # (layer, GGUF name) -> e -> HF
    for hf in names:
        if m := _EXPERT_RE.fullmatch(hf):
            layer, e, proj = int(m[1]), int(m[2]), m[3]
            if proj in EXPERT_PROJ and layer < h.n_layer:
                experts.setdefault((layer, EXPERT_PROJ[proj]), {})[e] = hf
                continue
        m = _SPLIT_RE.fullmatch(hf)
        splits = {**SPLITS, **family.splits}
        if m and m[2] in splits and int(m[1]) < h.n_layer:
            recipes += [Recipe(f"blk.{m[1]}.{name}", (hf,), part) for name, part in splits[m[2]]]
        elif (name := gguf_name(family, h, hf)) is not None:
            recipes.append(Recipe(name, (hf,)))
    for (layer, name), by_expert in sorted(experts.items()):
        if sorted(by_expert) != list(range(h.n_expert)):
            missing = sorted(set(range(h.n_expert)) - set(by_expert))
            raise ConvertError(f"{h.source}: layer {layer} has {name} weights for experts "
                               f"{sorted(by_expert)}, config.json says {h.n_expert} experts "
                               f"(missing {missing})")
        recipes.append(Recipe(f"blk.{layer}.{name}.weight",
                              tuple(by_expert[e] for e in range(h.n_expert))))
    return recipes


def recipe_shape(r: Recipe, src: HFSource, h: HParams) -> tuple[int, ...]:
    """The GGUF tensor's PyTorch-order shape, from the safetensors headers alone."""
    shapes = [src.shape(name) for name in r.sources]
    for name, shape in zip(r.sources, shapes):
        if shape != shapes[0]:
            raise ShapeMismatchError(f"{src.files[name]}: tensor {name!r} has shape "
                                     f"{list(shape)}, expert 0 has {list(shapes[0])}")
    shape = (len(shapes), *shapes[0]) if len(shapes) > 1 else shapes[0]
    if r.part is None:
        return shape
    try:                                     # the part's view ops, on a tensor without data
        return tuple(r.part(torch.empty(shape, device="meta"), h).shape)
    except RuntimeError as e:
        raise ShapeMismatchError(f"{src.files[r.sources[0]]}: tensor {r.label!r} of shape "
                                 f"{list(shape)} cannot be split as config.json implies: "
                                 f"{e}") from None


def read_recipe(r: Recipe, src: HFSource, h: HParams) -> torch.Tensor:
    """The GGUF tensor's data as float32 (before the family's fixes)."""
    if len(r.sources) == 1:
        t = src.read(r.sources[0])
    else:
        t = torch.empty((len(r.sources), *src.shape(r.sources[0])))        # (E, ...)
        for e, name in enumerate(r.sources):
            t[e] = src.read(name)
    return t if r.part is None else r.part(t, h).contiguous()
