"""ModelConfig.from_gguf(metadata): the one place that reads `{arch}.*` hyperparameter keys.

Defaults follow llama.cpp's `load_hparams`: head_count_kv = head_count, key/value length =
n_embd / n_head, rope dimension = key length, rope base 10000, rope scaling "linear" factor 1,
context for YaRN = training context. Per-layer keys (head counts, feed-forward length) may be a
scalar or an array of block_count values. `block_count` counts the multi-token-prediction
blocks (`nextn_predict_layers`, GLM-4.5) that follow the trunk; inference runs the trunk only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import GGUFFormatError, MissingKeyError

_MISSING = object()


class _Keys:
    """Typed access to `{arch}.*` keys with one-line errors naming the key."""

    def __init__(self, meta: dict[str, Any], arch: str, source: str):
        self.meta, self.arch, self.source = meta, arch, source

    def get(self, suffix: str, default: Any = _MISSING, kind: type | tuple = (int, float)) -> Any:
        key = f"{self.arch}.{suffix}"
        value = self.meta.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise MissingKeyError(f"{self.source}: required metadata key {key!r} is missing")
            return default
        bool_ok = kind is bool or (isinstance(kind, tuple) and bool in kind)
        if isinstance(value, bool) and not bool_ok:
            raise GGUFFormatError(f"{self.source}: metadata key {key!r} should be a number")
        if not isinstance(value, kind) and not isinstance(value, list):
            raise GGUFFormatError(f"{self.source}: metadata key {key!r} has type "
                                  f"{type(value).__name__}, expected {kind}")
        return value

    def per_layer(self, suffix: str, n_layer: int, default: Any = _MISSING) -> tuple[int, ...]:
        value = self.get(suffix, default)
        if isinstance(value, list):
            if len(value) != n_layer:
                raise GGUFFormatError(f"{self.source}: {self.arch}.{suffix} has {len(value)} "
                                      f"entries for {n_layer} blocks")
            return tuple(int(v) for v in value)
        return (int(value),) * n_layer


@dataclass(frozen=True)
class RopeScaling:
    """`{arch}.rope.scaling.*`: kind in none|linear|yarn|longrope|llama3, factor >= 1."""

    kind: str = "none"
    factor: float = 1.0
    original_context: int = 0
    attn_factor: float = 1.0
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    yarn_log_mul: float = 0.0
    low_freq_factor: float = 1.0     # llama3
    high_freq_factor: float = 4.0    # llama3


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of one model, as llama.cpp reads them. Per-layer values are tuples."""

    architecture: str
    context_length: int
    embedding_length: int
    block_count: int
    feed_forward_length: tuple[int, ...]
    head_count: tuple[int, ...]
    head_count_kv: tuple[int, ...]
    key_length: int
    value_length: int
    rope_dimension_count: int
    rope_freq_base: float
    rope_freq_base_swa: float
    rope_scaling: RopeScaling
    norm_epsilon: float
    vocab_size: int
    sliding_window: int = 0                      # 0: no sliding-window layers
    swa_layers: tuple[bool, ...] = ()            # per layer: uses the sliding window
    attn_logit_softcapping: float = 0.0
    final_logit_softcapping: float = 0.0
    attention_scale: float = 0.0                 # 0: 1/sqrt(key_length)
    expert_count: int = 0
    expert_used_count: int = 0
    expert_feed_forward_length: int = 0
    expert_shared_count: int = 0
    expert_shared_feed_forward_length: int = 0
    expert_weights_scale: float = 1.0
    expert_weights_norm: bool = False
    expert_gating_func: int = 0                  # 0 unset, 1 softmax, 2 sigmoid
    expert_group_count: int = 0
    expert_group_used_count: int = 0
    leading_dense_block_count: int = 0
    nextn_predict_layers: int = 0                # trailing MTP blocks, skipped at inference
    q_lora_rank: int = 0
    kv_lora_rank: int = 0                        # > 0: multi-head latent attention (deepseek2)
    key_length_mla: int = 0                      # MLA per-head K / V widths (0: key/value_length)
    value_length_mla: int = 0
    embedding_scale: float = 0.0                 # granite multipliers (0: unused)
    residual_scale: float = 0.0
    logit_scale: float = 0.0
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], source: str = "<metadata>",
                  swa_pattern_default: int = 0) -> "ModelConfig":
        """Read the config of `general.architecture` from GGUF metadata.

        swa_pattern_default: llama.cpp's per-family period of sliding-window layers (gemma2: 2,
        gemma3: 6) used when `{arch}.attention.sliding_window_pattern` is absent.
        """
        arch = meta.get("general.architecture")
        if not isinstance(arch, str):
            raise MissingKeyError(f"{source}: required metadata key 'general.architecture' "
                                  f"is missing")
        k = _Keys(meta, arch, source)
        n_layer = int(k.get("block_count"))
        n_embd = int(k.get("embedding_length"))
        if n_layer <= 0 or n_embd <= 0:
            raise GGUFFormatError(f"{source}: block_count and embedding_length must be positive")
        heads = k.per_layer("attention.head_count", n_layer)
        if min(heads) <= 0:
            raise GGUFFormatError(f"{source}: {arch}.attention.head_count must be positive")
        key_length = int(k.get("attention.key_length", n_embd // heads[0]))
        tokens = meta.get("tokenizer.ggml.tokens")
        window = int(k.get("attention.sliding_window", 0))
        return cls(
            architecture=arch,
            context_length=int(k.get("context_length")),
            embedding_length=n_embd,
            block_count=n_layer,
            feed_forward_length=k.per_layer("feed_forward_length", n_layer, 0),
            head_count=heads,
            head_count_kv=k.per_layer("attention.head_count_kv", n_layer, list(heads)),
            key_length=key_length,
            value_length=int(k.get("attention.value_length", n_embd // heads[0])),
            rope_dimension_count=int(k.get("rope.dimension_count", key_length)),
            rope_freq_base=float(k.get("rope.freq_base", 10000.0)),
            rope_freq_base_swa=float(k.get("rope.freq_base_swa", 10000.0)),
            rope_scaling=_rope_scaling(k),
            norm_epsilon=float(k.get("attention.layer_norm_rms_epsilon",
                                     k.get("attention.layer_norm_epsilon", 1e-5))),
            vocab_size=int(k.get("vocab_size", len(tokens) if isinstance(tokens, list) else 0)),
            sliding_window=window,
            swa_layers=_swa_layers(k, n_layer, window, swa_pattern_default),
            attn_logit_softcapping=float(k.get("attn_logit_softcapping", 0.0)),
            final_logit_softcapping=float(k.get("final_logit_softcapping", 0.0)),
            attention_scale=float(k.get("attention.scale", 0.0)),
            **_moe_fields(k),
            nextn_predict_layers=_nextn_layers(k, n_layer),
            **_mla_fields(k),
            embedding_scale=float(k.get("embedding_scale", 0.0)),
            residual_scale=float(k.get("residual_scale", 0.0)),
            logit_scale=float(k.get("logit_scale", 0.0)),
        )

    @property
    def trunk_block_count(self) -> int:
        """The blocks a forward pass runs: block_count less the trailing MTP blocks."""
        return self.block_count - self.nextn_predict_layers

    @property
    def head_dim(self) -> int:
        return self.key_length

    @property
    def softmax_scale(self) -> float:
        return self.attention_scale or 1.0 / math.sqrt(self.key_length)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for `inspect --json`; per-layer tuples collapse to one value when uniform."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if isinstance(v, tuple) and v and len(set(v)) == 1 and f.name != "swa_layers":
                v = v[0]
            elif isinstance(v, RopeScaling):
                v = {g.name: getattr(v, g.name) for g in fields(v)}
            elif f.name == "swa_layers":
                v = [i for i, s in enumerate(v) if s]
            out[f.name] = v
        return out


def _rope_scaling(k: _Keys) -> RopeScaling:
    kind = k.get("rope.scaling.type", "linear", kind=str)
    factor = float(k.get("rope.scaling.factor", k.get("rope.scale_linear", 0.0)) or 1.0)
    if kind == "linear" and factor == 1.0:
        kind = "none"
    return RopeScaling(
        kind=kind,
        factor=factor,
        original_context=int(k.get("rope.scaling.original_context_length",
                                   k.get("context_length"))),
        attn_factor=float(k.get("rope.scaling.attn_factor", 1.0)),
        yarn_beta_fast=float(k.get("rope.scaling.yarn_beta_fast", 32.0)),
        yarn_beta_slow=float(k.get("rope.scaling.yarn_beta_slow", 1.0)),
        yarn_log_mul=float(k.get("rope.scaling.yarn_log_multiplier", 0.0)),
    )


def _swa_layers(k: _Keys, n_layer: int, window: int, default_period: int) -> tuple[bool, ...]:
    """llama.cpp's set_swa_pattern: with period n, layer il slides iff il % n < n - 1."""
    if window <= 0:
        return (False,) * n_layer
    pattern = k.get("attention.sliding_window_pattern", default_period, kind=(int, bool))
    if isinstance(pattern, list):
        if len(pattern) != n_layer:
            raise GGUFFormatError(f"{k.source}: {k.arch}.attention.sliding_window_pattern has "
                                  f"{len(pattern)} entries for {n_layer} blocks")
        return tuple(bool(p) for p in pattern)
    n = int(pattern)
    return tuple(n == 0 or il % n < n - 1 for il in range(n_layer))


def _moe_fields(k: _Keys) -> dict[str, Any]:
    return dict(
        expert_count=int(k.get("expert_count", 0)),
        expert_used_count=int(k.get("expert_used_count", 0)),
        expert_feed_forward_length=int(k.get("expert_feed_forward_length", 0)),
        expert_shared_count=int(k.get("expert_shared_count", 0)),
        expert_shared_feed_forward_length=int(k.get("expert_shared_feed_forward_length", 0)),
        expert_weights_scale=float(k.get("expert_weights_scale", 1.0)),
        expert_weights_norm=bool(k.get("expert_weights_norm", False, kind=(bool, int))),
        expert_gating_func=int(k.get("expert_gating_func", 0)),
        expert_group_count=int(k.get("expert_group_count", 0)),
        expert_group_used_count=int(k.get("expert_group_used_count", 0)),
        leading_dense_block_count=int(k.get("leading_dense_block_count", 0)),
    )


def _nextn_layers(k: _Keys, n_layer: int) -> int:
    """llama.cpp's n_layer_nextn: at most block_count - 1 here, so a trunk remains to run."""
    n = int(k.get("nextn_predict_layers", 0))
    if not 0 <= n < n_layer:
        raise GGUFFormatError(f"{k.source}: {k.arch}.nextn_predict_layers is {n}; it must be "
                              f"below {k.arch}.block_count ({n_layer})")
    return n


def _mla_fields(k: _Keys) -> dict[str, Any]:
    return {f: int(k.get(f"attention.{f}", 0))
            for f in ("q_lora_rank", "kv_lora_rank", "key_length_mla", "value_length_mla")}
