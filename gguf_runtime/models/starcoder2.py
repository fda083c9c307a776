"""StarCoder 2: LayerNorm with biases, biases on every projection, a plain GELU FFN
(mlp.c_fc -> ffn_up, mlp.c_proj -> ffn_down), RoPE over halves; sequential residuals. Its
config's sliding window is not applied (llama.cpp's starcoder2 graph has none)."""

from __future__ import annotations

from .hparams import base_keys
from .spec import PER_BLOCK, ArchSpec, ConvertSpec, Family

STARCODER2_BLOCK = {**PER_BLOCK, "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}

FAMILIES = [
    Family(ArchSpec("starcoder2", rope_style="neox", activation="gelu", norm="layer", ffn="plain"),
           ConvertSpec("starcoder2", base_keys, STARCODER2_BLOCK, plain_ffn=True),
           hf_classes=("Starcoder2ForCausalLM",)),
]
