"""DeepSeek-MoE (v1, `deepseek`: DeepSeek-MoE-16B): llama attention (RoPE over adjacent pairs),
leading dense layers (`leading_dense_block_count`), then a softmax router over all experts whose
top-k probabilities are not renormalised, only scaled (`expert_weights_scale`), and shared
experts without a gate, as llama.cpp's deepseek graph. It runs from GGUF files (its Hugging Face
model is remote code, which the converter does not read); DeepSeek-V2/V3 are deepseek2.py's.
"""

from __future__ import annotations

from .spec import ArchSpec, Family

FAMILIES = [Family(ArchSpec("deepseek", moe=True, expert_weights_norm=False))]
