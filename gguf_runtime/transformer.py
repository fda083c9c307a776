"""The one decoder loop: embeddings -> blocks (attention + FFN) -> norm -> logits.

Attributes carry the GGUF tensor names (`token_embd`, `blk[i].attn_q`, `ffn_down`, ...). Which
optional pieces a block has (biases, Q/K norms, post-norms, fused QKV) is read from the tensors
present; what the file cannot say comes from the ArchSpec (registry.py).

Legend: T new tokens, D model width, H/Hkv query/kv heads, Dk/Dv head dims, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from quant import QTensor
from quant.qlinear import QLinear

from .config import ModelConfig, RopeScaling
from .errors import GGUFFormatError
from .gguf_file import GGUFFile
from .kv_cache import KVCache
from .layers import Rope, RopeParams, attention, causal_mask, gated_activation, rms_norm, softcap
from .registry import ArchSpec

_LINEARS = ("attn_q", "attn_k", "attn_v", "attn_qkv", "attn_output",
            "ffn_gate", "ffn_up", "ffn_down")
_NORMS = ("attn_norm", "attn_q_norm", "attn_k_norm", "post_attention_norm",
          "ffn_norm", "post_ffw_norm")


@dataclass
class Block:
    """One transformer block's weights, named as in the GGUF file (None when absent)."""

    index: int
    attn_norm: torch.Tensor | None = None
    attn_q: QLinear | None = None
    attn_k: QLinear | None = None
    attn_v: QLinear | None = None
    attn_qkv: QLinear | None = None
    attn_output: QLinear | None = None
    attn_q_norm: torch.Tensor | None = None
    attn_k_norm: torch.Tensor | None = None
    post_attention_norm: torch.Tensor | None = None
    ffn_norm: torch.Tensor | None = None
    ffn_gate: QLinear | None = None
    ffn_up: QLinear | None = None
    ffn_down: QLinear | None = None
    post_ffw_norm: torch.Tensor | None = None
    rope: Rope | None = field(default=None, repr=False)
    window: int = 0


class Transformer:
    """Decoder-only transformer over quantized GGUF weights. Holds no per-sequence state."""

    def __init__(self, gf: GGUFFile, config: ModelConfig, spec: ArchSpec):
        self.gf, self.config, self.spec = gf, config, spec
        self.token_embd = self._qtensor("token_embd.weight")
        out_name = "output.weight" if "output.weight" in gf.tensors else "token_embd.weight"
        self.output = QLinear(self._qtensor(out_name))
        self.output_norm = self._vector("output_norm.weight")
        self.blk = [self._block(i) for i in range(config.block_count)]
        c = config
        self.embed_scale = math.sqrt(c.embedding_length) if spec.embed_scale_sqrt \
            else (c.embedding_scale or 1.0)
        self.attn_scale = self._attention_scale()

    # ------------------------------------------------------------------ loading
    def _qtensor(self, name: str) -> QTensor:
        info = self.gf.tensors.get(name)
        if info is None:
            raise GGUFFormatError(f"{self.gf.path}: required tensor {name!r} is missing")
        return info.qtensor()

    def _vector(self, name: str) -> torch.Tensor | None:
        info = self.gf.tensors.get(name)
        return info.qtensor().dequantize() if info is not None else None

    def _block(self, i: int) -> Block:
        b = Block(index=i)
        for name in _LINEARS:
            w = self.gf.tensors.get(f"blk.{i}.{name}.weight")
            if w is not None:
                bias = self._vector(f"blk.{i}.{name}.bias")
                setattr(b, name, QLinear(w.qtensor(), bias))
        for name in _NORMS:
            setattr(b, name, self._vector(f"blk.{i}.{name}.weight"))
        if (b.attn_q is None and b.attn_qkv is None) or b.attn_output is None \
                or b.ffn_up is None or b.ffn_down is None:
            raise GGUFFormatError(f"{self.gf.path}: block {i} lacks attention or FFN tensors")
        c = self.config
        swa = bool(c.swa_layers[i]) if c.swa_layers else False
        b.window = c.sliding_window if swa else 0
        swa_rope = swa and self.spec.swa_pattern > 0
        b.rope = Rope(RopeParams(
            n_rot=c.rope_dimension_count,
            base=c.rope_freq_base_swa if swa_rope else c.rope_freq_base,
            style=self.spec.rope_style,
            # llama.cpp: sliding layers rotate with freq_scale_swa, which is 1 (no scaling)
            # unless the family copies the global scale (gemma2); Gemma 3 4B+ scale only global.
            scaling=RopeScaling() if swa_rope and self.spec.name != "gemma2" else c.rope_scaling,
            freq_factors=self._vector("rope_freqs.weight")))
        return b

    def _attention_scale(self) -> float:
        c = self.config
        if c.attention_scale:
            return c.attention_scale
        # llama.cpp: Gemma 2/3 27B scale by n_embd/n_head, not the head dim.
        if self.spec.name in ("gemma2", "gemma3") and c.block_count in (46, 62):
            return 1.0 / math.sqrt(c.embedding_length / c.head_count[0])
        return 1.0 / math.sqrt(c.key_length)

    # ------------------------------------------------------------------ forward
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(T,) token ids -> (T, D): only the selected rows of token_embd are dequantized."""
        x = self.token_embd.gather_rows(ids)
        return x * self.embed_scale if self.embed_scale != 1.0 else x

    def forward(self, ids: torch.Tensor, cache: KVCache, all_logits: bool = False) -> torch.Tensor:
        """Run T new tokens at positions cache.length.. ; returns logits (T, V) or (1, V)."""
        start = cache.length
        pos = torch.arange(start, start + ids.numel())
        x = self.embed(ids)                                     # (T, D)
        for b in self.blk:
            x = self._block_forward(b, x, pos, cache)
        cache.advance(ids.numel())
        if not all_logits:
            x = x[-1:]
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        x = rms_norm(x, self.output_norm, c.norm_epsilon)
        out = self.output(x)                                    # (T, V)
        if c.logit_scale:
            out = out / c.logit_scale
        return softcap(out, c.final_logit_softcapping)

    def _block_forward(self, b: Block, x: torch.Tensor, pos: torch.Tensor,
                       cache: KVCache) -> torch.Tensor:
        c, eps = self.config, self.config.norm_epsilon
        h = self._attention(b, rms_norm(x, b.attn_norm, eps), pos, cache)
        if b.post_attention_norm is not None:
            h = rms_norm(h, b.post_attention_norm, eps)
        x = x + (h * c.residual_scale if c.residual_scale else h)
        h = self._ffn(b, rms_norm(x, b.ffn_norm, eps))
        if b.post_ffw_norm is not None:
            h = rms_norm(h, b.post_ffw_norm, eps)
        return x + (h * c.residual_scale if c.residual_scale else h)

    def _attention(self, b: Block, x: torch.Tensor, pos: torch.Tensor,
                   cache: KVCache) -> torch.Tensor:
        c, i, n_tok = self.config, b.index, x.shape[0]
        n_head, n_kv, dk, dv = c.head_count[i], c.head_count_kv[i], c.key_length, c.value_length
        if b.attn_qkv is not None:
            q, k, v = b.attn_qkv(x).split([n_head * dk, n_kv * dk, n_kv * dv], dim=-1)
        else:
            q, k, v = b.attn_q(x), b.attn_k(x), b.attn_v(x)
        q = q.view(n_tok, n_head, dk)                           # (T, H, Dk)
        k = k.reshape(n_tok, n_kv, dk)                          # (T, Hkv, Dk)
        v = v.reshape(n_tok, n_kv, dv)                          # (T, Hkv, Dv)
        if b.attn_q_norm is not None:
            q = rms_norm(q, b.attn_q_norm, c.norm_epsilon)
            k = rms_norm(k, b.attn_k_norm, c.norm_epsilon)
        cos, sin = b.rope.cos_sin(pos)
        q, k = b.rope.apply(q, cos, sin), b.rope.apply(k, cos, sin)
        keys, values, k_pos = cache.update(i, k, v, b.window)   # (Hkv, S, Dk), (Hkv, S, Dv)
        mask = causal_mask(pos, k_pos, b.window)
        out = attention(q.transpose(0, 1), keys, values, mask, self.attn_scale,
                        c.attn_logit_softcapping)               # (T, H*Dv)
        return b.attn_output(out)

    def _ffn(self, b: Block, x: torch.Tensor) -> torch.Tensor:
        up = b.ffn_up(x)
        if b.ffn_gate is not None:
            gate = b.ffn_gate(x)
        else:                                                   # fused [gate; up] (phi3)
            gate, up = up.chunk(2, dim=-1)
        return b.ffn_down(gated_activation(gate, up, self.spec.activation))
