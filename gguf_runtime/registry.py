"""general.architecture -> ArchSpec: what the file does not say but the architecture implies.

Everything a file states (head counts, norms present, biases present, tied output) is read from
the file; an ArchSpec only carries what llama.cpp hard-codes per architecture: RoPE ordering
("norm" rotates adjacent pairs, "neox" rotates the two halves), Gemma's sqrt(n_embd) embedding
scale, the FFN activation, the default sliding-window period, how a Mixture-of-Experts router
weighs its experts, which norm feeds the FFN, and whether this runtime runs it yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UnsupportedError


@dataclass(frozen=True)
class ArchSpec:
    name: str
    rope_style: str = "norm"          # "norm" (llama: interleaved pairs) | "neox" (halves)
    activation: str = "silu"          # gated FFN: silu (SwiGLU) | gelu (GeGLU, tanh approx)
    embed_scale_sqrt: bool = False    # gemma family: x = embd(tok) * sqrt(n_embd)
    # llama.cpp's default sliding-window period. 0: the family's graph has no sliding window and
    # runs full attention whatever `{arch}.attention.sliding_window` says (llama.cpp reads the
    # key for phi3 only to disable it: "Phi SWA is currently disabled", its PR 13676); so do we.
    swa_pattern: int = 0
    moe: bool = False                 # may have sparse (expert) FFN layers
    # llama.cpp hard-codes these per family in build_moe_ffn's call, ignoring the file's keys;
    # None / "file": read `{arch}.expert_weights_norm` / `{arch}.expert_gating_func` (deepseek2).
    expert_weights_norm: bool | None = True
    expert_gating: str = "softmax"    # "softmax" | "sigmoid" | "file"
    expert_gating_unset: str = "softmax"   # "file" with the key absent or 0 (glm4moe: sigmoid)
    # The tensor that norms the FFN's input. GLM-4.5's HF "post_attention_layernorm" is stored
    # as post_attention_norm but is the pre-FFN norm (llama.cpp's glm4-moe graph), no post-norm.
    ffn_norm: str = "ffn_norm"
    runnable: bool = True
    not_runnable_reason: str = ""


ARCHITECTURES: dict[str, ArchSpec] = {a.name: a for a in [
    ArchSpec("llama", moe=True),                           # Mixtral: llama with experts
    ArchSpec("granite", moe=True),
    ArchSpec("qwen2", rope_style="neox"),
    ArchSpec("qwen3", rope_style="neox"),
    ArchSpec("phi3", rope_style="neox"),
    ArchSpec("gemma", rope_style="neox", activation="gelu", embed_scale_sqrt=True),
    ArchSpec("gemma2", rope_style="neox", activation="gelu", embed_scale_sqrt=True,
             swa_pattern=2),
    ArchSpec("gemma3", rope_style="neox", activation="gelu", embed_scale_sqrt=True,
             swa_pattern=6),
    ArchSpec("qwen2moe", rope_style="neox", moe=True, expert_weights_norm=False),
    ArchSpec("qwen3moe", rope_style="neox", moe=True),
    ArchSpec("olmoe", rope_style="neox", moe=True, expert_weights_norm=False),
    ArchSpec("granitemoe", moe=True),
    ArchSpec("deepseek2", moe=True, expert_weights_norm=None, expert_gating="file"),
    ArchSpec("glm4moe", rope_style="neox", moe=True, expert_weights_norm=None,
             expert_gating="file", expert_gating_unset="sigmoid",
             ffn_norm="post_attention_norm"),
]}

# Names some converters write for the same graph.
ALIASES = {"mistral": "llama", "smollm": "llama", "falcon3": "llama"}


def supported_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


def detect(metadata: dict, source: str = "<metadata>") -> ArchSpec:
    """The ArchSpec for `general.architecture`; UnsupportedError listing the known ones."""
    name = metadata.get("general.architecture")
    name = ALIASES.get(name, name)
    spec = ARCHITECTURES.get(name)
    if spec is None:
        raise UnsupportedError(f"{source}: unknown architecture {name!r}; supported: "
                               f"{', '.join(supported_architectures())}")
    return spec
