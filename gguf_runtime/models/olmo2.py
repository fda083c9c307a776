"""OLMo 2: no pre-norms; each sub-layer's output is normed before its residual (post_attention_norm,
post_ffw_norm); Q/K RMSNorms over the whole projection (H*Dk and Hkv*Dk, before the split into
heads); RoPE over halves; SwiGLU FFN. OLMo 3's sliding-window layers are not implemented: such
a file is refused, and Olmo3ForCausalLM does not convert.
"""

from __future__ import annotations

from ..errors import UnsupportedError
from .hparams import KV, HParams, base_keys
from .spec import PER_BLOCK, ArchSpec, ConvertSpec, Family

OLMO2_BLOCK = {**PER_BLOCK, "post_attention_layernorm": "post_attention_norm",
               "post_feedforward_layernorm": "post_ffw_norm"}


def olmo2_keys(h: HParams, kv: KV) -> None:
    """Olmo2Model.set_gguf_parameters: the base keys (a config with a sliding window, OLMo 3's
    form, is refused)."""
    if h.cfg.get("sliding_window"):
        raise UnsupportedError(f"{h.source}: OLMo's sliding-window layers (OLMo 3) are not "
                               f"supported yet")
    base_keys(h, kv)


FAMILIES = [
    Family(ArchSpec("olmo2", rope_style="neox", pre_norm=False, qk_norm="whole",
                    window_unsupported="OLMo 3's sliding-window layers are not supported yet"),
           ConvertSpec("olmo2", olmo2_keys, OLMO2_BLOCK, qk_norm_full=True),
           hf_classes=("Olmo2ForCausalLM",)),
]
