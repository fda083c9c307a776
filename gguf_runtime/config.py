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


# Sanity bounds of the integer keys (llama.cpp: LLAMA_MAX_LAYERS 512, LLAMA_MAX_EXPERTS 512).
MAX_LAYERS, MAX_EXPERTS, MAX_WIDTH, MAX_HEADS, MAX_CONTEXT = 512, 512, 1 << 20, 1 << 12, (1 << 31) - 1


def _short(x: Any, n: int = 80) -> str:
    text = " ".join(repr(x).split())
    return text if len(text) <= n else text[:n] + "..."


class _Keys:
    """Typed access to `{arch}.*` keys with one-line errors naming the key: numbers finite,
    integers whole and within bounds, an array only where a per-layer value may be one."""

    def __init__(self, meta: dict[str, Any], arch: str, source: str):
        self.meta, self.arch, self.source = meta, arch, source

    def has(self, suffix: str) -> bool:
        return f"{self.arch}.{suffix}" in self.meta

    def _bad(self, suffix: str, what: str) -> GGUFFormatError:
        return GGUFFormatError(f"{self.source}: metadata key {self.arch}.{suffix} {what}")

    def get(self, suffix: str, default: Any = _MISSING, kind: type | tuple = (int, float),
            array_ok: bool = False) -> Any:
        key = f"{self.arch}.{suffix}"
        value = self.meta.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise MissingKeyError(f"{self.source}: required metadata key {key!r} is missing")
            return default
        if isinstance(value, list):
            if not array_ok:
                raise self._bad(suffix, f"should be one value, got an array of {len(value)}")
            return [self._scalar(suffix, v, kind) for v in value]
        return self._scalar(suffix, value, kind)

    def _scalar(self, suffix: str, value: Any, kind) -> Any:
        bool_ok = kind is bool or (isinstance(kind, tuple) and bool in kind)
        if isinstance(value, bool) and not bool_ok:
            raise self._bad(suffix, "should be a number, got a bool")
        if not isinstance(value, kind):
            raise self._bad(suffix, f"has type {type(value).__name__}, expected "
                                    f"{getattr(kind, '__name__', None) or '/'.join(k.__name__ for k in kind)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self._bad(suffix, f"is {value}, not a finite number")
        return value

    def int(self, suffix: str, default: Any = _MISSING, lo: int = 0, hi: int = MAX_CONTEXT) -> int:
        """An integer key (a whole float is accepted) within [lo, hi]."""
        return self._int_in(suffix, self.get(suffix, default), lo, hi)

    def _int_in(self, suffix: str, value: Any, lo: int, hi: int) -> int:
        if isinstance(value, float) and not value.is_integer():
            raise self._bad(suffix, f"is {value}, not a whole number")
        n = int(value)
        if not lo <= n <= hi:
            raise self._bad(suffix, f"is {_short(n)}, outside {lo}..{hi}")
        return n

    def float(self, suffix: str, default: Any = _MISSING, lo: float = -math.inf,
              hi: float = math.inf) -> float:
        """A finite number key within [lo, hi]."""
        x = float(self.get(suffix, default))
        if not lo <= x <= hi:
            raise self._bad(suffix, f"is {x}, outside {lo}..{hi}")
        return x

    def per_layer(self, suffix: str, n_layer: int, default: Any = _MISSING, lo: int = 0,
                  hi: int = MAX_WIDTH) -> tuple[int, ...]:
        value = self.get(suffix, default, array_ok=True)
        if isinstance(value, list):
            if len(value) != n_layer:
                raise GGUFFormatError(f"{self.source}: {self.arch}.{suffix} has {len(value)} "
                                      f"entries for {n_layer} blocks")
            return tuple(self._int_in(suffix, v, lo, hi) for v in value)
        return (self._int_in(suffix, value, lo, hi),) * n_layer


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
    rope_freq_base_swa: float | None             # None: the file has no rope.freq_base_swa
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
                  swa_pattern_default: int = 0, layer_norm: bool = False) -> "ModelConfig":
        """Read the config of `general.architecture` from GGUF metadata.

        swa_pattern_default: llama.cpp's per-family period of sliding-window layers (gemma2: 2,
        gemma3: 6) used when `{arch}.attention.sliding_window_pattern` is absent.
        layer_norm: the family's norms are LayerNorms, whose epsilon is
        `attention.layer_norm_epsilon` (RMSNorm's: `attention.layer_norm_rms_epsilon`); the
        other key is the fallback.
        """
        arch = meta.get("general.architecture")
        if not isinstance(arch, str):
            raise MissingKeyError(f"{source}: required metadata key 'general.architecture' "
                                  f"is missing")
        k = _Keys(meta, arch, source)
        n_layer = k.int("block_count", lo=1, hi=MAX_LAYERS)
        n_embd = k.int("embedding_length", lo=1, hi=MAX_WIDTH)
        heads = k.per_layer("attention.head_count", n_layer, lo=1, hi=MAX_HEADS)
        key_length = k.int("attention.key_length", n_embd // heads[0], lo=1, hi=MAX_WIDTH)
        tokens = meta.get("tokenizer.ggml.tokens")
        window = k.int("attention.sliding_window", 0)
        config = cls(
            architecture=arch,
            context_length=k.int("context_length", lo=1),
            embedding_length=n_embd,
            block_count=n_layer,
            feed_forward_length=k.per_layer("feed_forward_length", n_layer, 0),
            head_count=heads,
            head_count_kv=k.per_layer("attention.head_count_kv", n_layer, list(heads), lo=0, hi=MAX_HEADS),
            key_length=key_length,
            value_length=k.int("attention.value_length", n_embd // heads[0], lo=1, hi=MAX_WIDTH),
            rope_dimension_count=k.int("rope.dimension_count", key_length, hi=MAX_WIDTH),
            rope_freq_base=k.float("rope.freq_base", 10000.0, lo=1e-30),
            rope_freq_base_swa=(k.float("rope.freq_base_swa", lo=1e-30) if k.has("rope.freq_base_swa")
                                else None),
            rope_scaling=_rope_scaling(k),
            norm_epsilon=_norm_epsilon(k, layer_norm),
            vocab_size=k.int("vocab_size", len(tokens) if isinstance(tokens, list) else 0),
            sliding_window=window,
            swa_layers=_swa_layers(k, n_layer, window, swa_pattern_default),
            attn_logit_softcapping=k.float("attn_logit_softcapping", 0.0, lo=0.0),
            final_logit_softcapping=k.float("final_logit_softcapping", 0.0, lo=0.0),
            attention_scale=k.float("attention.scale", 0.0, lo=0.0),
            **_moe_fields(k),
            nextn_predict_layers=_nextn_layers(k, n_layer),
            **_mla_fields(k),
            embedding_scale=k.float("embedding_scale", 0.0),
            residual_scale=k.float("residual_scale", 0.0),
            logit_scale=k.float("logit_scale", 0.0),
        )
        config._check_relations(source)
        return config

    def _check_relations(self, source: str) -> None:
        """What must hold between keys for the model's math to be defined (one-line errors)."""
        a = self.architecture
        problems = []
        for i, (h, kv) in enumerate(zip(self.head_count, self.head_count_kv)):
            if kv == 0 or h % kv:
                problems.append(f"{a}.attention.head_count_kv ({kv}) must divide head_count ({h}) "
                                f"(block {i})")
                break
        if self.rope_dimension_count % 2 or self.rope_dimension_count > self.key_length:
            problems.append(f"{a}.rope.dimension_count ({self.rope_dimension_count}) must be even "
                            f"and at most the key length ({self.key_length})")
        if problems:
            raise GGUFFormatError(f"{source}: {problems[0]}")

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


def _norm_epsilon(k: _Keys, layer_norm: bool) -> float:
    keys = ["attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"]
    first, second = keys[::-1] if layer_norm else keys
    return k.float(first, k.get(second, 1e-5), lo=0.0, hi=1.0)


def _rope_scaling(k: _Keys) -> RopeScaling:
    kind = k.get("rope.scaling.type", "linear", kind=str)
    factor = k.float("rope.scaling.factor", k.get("rope.scale_linear", 0.0), lo=0.0) or 1.0
    if kind == "linear" and factor == 1.0:
        kind = "none"
    return RopeScaling(
        kind=kind,
        factor=factor,
        original_context=k.int("rope.scaling.original_context_length", k.get("context_length")),
        attn_factor=k.float("rope.scaling.attn_factor", 1.0),
        yarn_beta_fast=k.float("rope.scaling.yarn_beta_fast", 32.0),
        yarn_beta_slow=k.float("rope.scaling.yarn_beta_slow", 1.0),
        yarn_log_mul=k.float("rope.scaling.yarn_log_multiplier", 0.0),
    )


def _swa_layers(k: _Keys, n_layer: int, window: int, default_period: int) -> tuple[bool, ...]:
    """llama.cpp's set_swa_pattern: with period n, layer il slides iff il % n < n - 1."""
    if window <= 0:
        return (False,) * n_layer
    pattern = k.get("attention.sliding_window_pattern", default_period, kind=(int, bool), array_ok=True)
    if isinstance(pattern, list):
        if len(pattern) != n_layer:
            raise GGUFFormatError(f"{k.source}: {k.arch}.attention.sliding_window_pattern has "
                                  f"{len(pattern)} entries for {n_layer} blocks")
        return tuple(bool(p) for p in pattern)
    n = k._int_in("attention.sliding_window_pattern", pattern, 0, MAX_LAYERS)
    return tuple(n == 0 or il % n < n - 1 for il in range(n_layer))


def _moe_fields(k: _Keys) -> dict[str, Any]:
    return dict(
        expert_count=k.int("expert_count", 0, hi=MAX_EXPERTS),
        expert_used_count=k.int("expert_used_count", 0, hi=MAX_EXPERTS),
        expert_feed_forward_length=k.int("expert_feed_forward_length", 0, hi=MAX_WIDTH),
        expert_shared_count=k.int("expert_shared_count", 0, hi=MAX_EXPERTS),
        expert_shared_feed_forward_length=k.int("expert_shared_feed_forward_length", 0, hi=MAX_WIDTH),
        expert_weights_scale=k.float("expert_weights_scale", 1.0),
        expert_weights_norm=bool(k.get("expert_weights_norm", False, kind=(bool, int))),
        expert_gating_func=k.int("expert_gating_func", 0, hi=16),
        expert_group_count=k.int("expert_group_count", 0, hi=MAX_EXPERTS),
        expert_group_used_count=k.int("expert_group_used_count", 0, hi=MAX_EXPERTS),
        leading_dense_block_count=k.int("leading_dense_block_count", 0, hi=MAX_LAYERS),
    )


def _nextn_layers(k: _Keys, n_layer: int) -> int:
    """llama.cpp's n_layer_nextn: at most block_count - 1 here, so a trunk remains to run."""
    n = k.int("nextn_predict_layers", 0, hi=MAX_LAYERS)
    if not 0 <= n < n_layer:
        raise GGUFFormatError(f"{k.source}: {k.arch}.nextn_predict_layers is {n}; it must be "
                              f"below {k.arch}.block_count ({n_layer})")
    return n


def _mla_fields(k: _Keys) -> dict[str, Any]:
    return {f: k.int(f"attention.{f}", 0, hi=MAX_WIDTH)
            for f in ("q_lora_rank", "kv_lora_rank", "key_length_mla", "value_length_mla")}
