"""The one decoder loop: embeddings -> blocks (attention + FFN) -> norm -> logits.

Attributes carry the GGUF tensor names (`token_embd`, `blk[i].attn_q`, `ffn_down`, ...). Which
optional pieces a block has (biases, Q/K norms, post-norms, fused QKV) is read from the tensors
present; what the file cannot say comes from the family's ArchSpec (gguf_runtime/models/).
Each block's topology is its BlockPlan (block_plan.py), built at load: norm kind (norms are
`Norm` objects), sequential or parallel residual, FFN kind (gated, fused gated, plain, or
sparse: `blk[i].moe`, see moe.py), Q/K norm kind, attention kind. For one token, a block whose
plan and weights the native step implements runs as one native call (quant.kernels.block_step:
the same ops in the same order, bit-identical); everything else runs op by op below.

Legend: T new tokens, D model width, H/Hkv query/kv heads, Dk/Dv head dims, V vocabulary.
"""

from __future__ import annotations

import math
import warnings

import torch

from quant.kernels.block_step import BlockShape, BlockStep, BlockWeights, bind_block
from quant.kernels.registry import DECODE_MAX_ROWS, env_spec
from quant.qlinear import QLinear, QLinearGroup

from .block_plan import Block, plan_block
from .config import ModelConfig, RopeScaling
from .errors import GGUFFormatError, UnsupportedError
from .gguf_file import GGUFFile
from .kv_cache import KVCache
from .layers import Norm, Rope, RopeParams, activation, attention, causal_mask, gated_activation, per_row, softcap
from .models.deepseek2 import build_mla, mla_attention_scale, mla_rope_scaling
from .models.spec import ArchSpec
from .moe import build_moe, is_sparse
from .tensors import BlockTensors, Tensors

_NORMS = ("attn_norm", "attn_q_norm", "attn_k_norm", "post_attention_norm",
          "ffn_norm", "post_ffw_norm")


class Transformer:
    """Decoder-only transformer over quantized GGUF weights. Holds no per-sequence state."""

    def __init__(self, gf: GGUFFile, config: ModelConfig, spec: ArchSpec):
        self.gf, self.config, self.spec = gf, config, spec
        c, d = config, config.embedding_length
        top = Tensors(gf, "", f"{c.architecture} of width {d}, vocabulary {c.vocab_size}")
        embd = top.info("token_embd.weight", (c.vocab_size or None, d))
        n_vocab = embd.shape[-2] if len(embd.shape) > 1 else 1
        self.token_embd = embd.qtensor()
        out_name = "output.weight" if "output.weight" in gf.tensors else "token_embd.weight"
        out_bias = top.vector("output.bias", n_vocab) if out_name == "output.weight" else None
        self.output = QLinear(top.info(out_name, (n_vocab, d)).qtensor(), out_bias, exact=True)  # logits float32
        self.output_norm = self._norm(top, "output_norm", d) or Norm(spec.norm, None, None, c.norm_epsilon)
        self._freq_factors = top.vector("rope_freqs.weight", c.rope_dimension_count // 2)
        self._ropes: dict[tuple, Rope] = {}
        if spec.window_unsupported and config.sliding_window > 0:
            raise UnsupportedError(f"{gf.path}: {spec.name} with a sliding window "
                                   f"({config.sliding_window}): {spec.window_unsupported}")
        if spec.swa_pattern == 0 and config.sliding_window > 0:
            warnings.warn(f"{gf.path}: {spec.name}'s sliding window ({config.sliding_window}) is not "
                          f"applied: full attention, as llama.cpp runs this family", RuntimeWarning, stacklevel=3)
        # llama.cpp's trunk graph: the trailing MTP (nextn) blocks are not run.
        self.blk = [self._block(i) for i in range(config.trunk_block_count)]
        self.embed_scale = math.sqrt(c.embedding_length) if spec.embed_scale_sqrt \
            else (c.embedding_scale or 1.0)
        self.attn_scale = self._attention_scale()
        self._steps: dict[tuple[int, str], BlockStep | None] = {}

    # ------------------------------------------------------------------ loading
    def _block(self, i: int) -> Block:
        """Block i's tensors, each shape checked against the config (tensors.Tensors)."""
        c, b = self.config, Block(index=i)
        d, h, kv = c.embedding_length, c.head_count[i], c.head_count_kv[i]
        dk = c.key_length
        dv = (c.value_length_mla or c.value_length) if c.kv_lora_rank > 0 else c.value_length
        t = BlockTensors(self.gf, i, f"{c.architecture} block {i}: width {d}, {h} heads of "
                                     f"{dk} / {dv} over {kv} kv heads")
        self._load_norms(t, b, d, dk * h, dk * kv)
        if c.kv_lora_rank > 0:
            b.mla = build_mla(self.gf, i, c)
        else:
            b.attn_q = t.linear("attn_q", (h * dk, d), False, bias=True)
            b.attn_k = t.linear("attn_k", (kv * dk, d), False, bias=True)
            b.attn_v = t.linear("attn_v", (kv * dv, d), False, bias=True)
            b.attn_qkv = t.linear("attn_qkv", (h * dk + kv * (dk + dv), d), False, bias=True)
        b.attn_output = t.linear("attn_output", (d, h * dv), False, bias=True)
        b.attn_sinks = t.vector("attn_sinks.weight", h) if self.spec.sinks else None
        b.plan = plan_block(self.spec, mla=c.kv_lora_rank > 0, sparse=is_sparse(c, i),
                            has_ffn_norm=b.ffn_norm is not None, has_qk_norm=b.attn_q_norm is not None,
                            has_sinks=b.attn_sinks is not None,
                            where=f"{self.gf.path}: block {i}")
        self._input_norms(b)
        if b.plan.ffn == "moe":
            b.moe = build_moe(self.gf, i, c, self.spec)
        else:
            f = c.feed_forward_length[i] // (2 if self.spec.ffn_length_halved else 1)
            self._dense_ffn(t, b, d, f or None)
        qkv_missing = b.mla is None and b.attn_qkv is None and None in (b.attn_q, b.attn_k, b.attn_v)
        if qkv_missing or b.attn_output is None or (b.moe is None and (b.ffn_up is None or b.ffn_down is None)):
            raise GGUFFormatError(f"{self.gf.path}: block {i} lacks attention or FFN tensors (it needs "
                                  f"attn_qkv or attn_q/k/v, attn_output, ffn_up and ffn_down)")
        self._group_linears(b)
        # only families whose llama.cpp graph has a sliding window apply the file's (see ArchSpec)
        swa = bool(c.swa_layers[i]) if c.swa_layers and self.spec.swa_pattern > 0 else False
        b.window = c.sliding_window if swa else 0
        b.rope = self._shared_rope(RopeParams(
            n_rot=c.rope_dimension_count,
            base=self._rope_base(swa),
            style=self.spec.rope_style,
            scaling=self._rope_scaling(b, swa),
            freq_factors=self._freq_factors))
        return b

    def _load_norms(self, t: BlockTensors, b: Block, d: int, nq: int, nk: int) -> None:
        """The block's norms of width d, its Q/K norms (of Dk, or nq / nk over the whole
        projection) by the family's kind; the family's renames (glm4moe's FFN norm, falcon's
        two norms: ln_attn as attn_norm_2, ln_mlp as attn_norm)."""
        for name in _NORMS[:1] + _NORMS[3:]:
            setattr(b, name, self._norm(t, name, d))
        if self.spec.ffn_norm != "ffn_norm":
            b.ffn_norm = getattr(b, self.spec.ffn_norm)
            setattr(b, self.spec.ffn_norm, None)
        if self.spec.attn_norm_2 and (attn_norm_2 := self._norm(t, "attn_norm_2", d)) is not None:
            b.ffn_norm, b.attn_norm = b.attn_norm, attn_norm_2
        dk = self.config.key_length
        qk = {"head": (dk, dk), "whole": (nq, nk)}.get(self.spec.qk_norm, ([dk, nq], [dk, nk]))
        b.attn_q_norm = self._norm(t, "attn_q_norm", qk[0], rms=True)
        b.attn_k_norm = self._norm(t, "attn_k_norm", qk[1], rms=True)

    def _input_norms(self, b: Block) -> None:
        """By the plan: a missing input norm normalises without a weight; without pre-norms
        (olmo2) there is none, and a file that has them is refused."""
        if not b.plan.pre_norm and (b.attn_norm or b.ffn_norm):
            raise GGUFFormatError(f"{self.gf.path}: block {b.index} has attn_norm / ffn_norm, which "
                                  f"{self.config.architecture}'s graph (post-norms only) does not use")
        bare = Norm(self.spec.norm, None, None, self.config.norm_epsilon)
        if b.plan.pre_norm:
            b.attn_norm = b.attn_norm or bare
            b.ffn_norm = b.ffn_norm or (bare if b.plan.residual == "sequential" else None)

    def _norm(self, t: Tensors, name: str, n: int | list[int], rms: bool = False) -> Norm | None:
        """The norm {name}.weight (+ {name}.bias) of n values, of the family's kind (Q/K norms:
        always RMS), or None when the file has none."""
        weight = t.vector(f"{name}.weight", n)
        if weight is None:
            return None
        bias = t.vector(f"{name}.bias", weight.numel())
        return Norm("rms" if rms else self.spec.norm, weight, bias, self.config.norm_epsilon)

    @staticmethod
    def _dense_ffn(t: BlockTensors, b: Block, d: int, f: int | None) -> None:
        """By the plan: "gated" ffn_gate / ffn_up (F, D), "gated_fused" ffn_up = [gate; up] of
        (2F, D) (phi3), "plain" ffn_up (F, D) alone; ffn_down (D, F). F from the config, else
        from ffn_up."""
        kind = b.plan.ffn
        b.ffn_gate = t.linear("ffn_gate", (f, d), kind == "gated", bias=True) if kind == "gated" else None
        fused = kind == "gated_fused"
        b.ffn_up = t.linear("ffn_up", (2 * f if fused and f else f, d), True, bias=True)
        n_up = b.ffn_up.out_features
        if (b.ffn_gate is not None and b.ffn_gate.out_features != n_up) or (fused and n_up % 2):
            raise GGUFFormatError(f"{t.gf.path}: {t.prefix}ffn_up.weight has {n_up} rows, which do not "
                                  f"match ffn_gate's (or, fused, are odd) ({t.context})")
        b.ffn_down = t.linear("ffn_down", (d, n_up // 2 if fused else n_up), True, bias=True)

    @staticmethod
    def _group_linears(b: Block) -> None:
        """Q, K, V as one attn_qkv and gate, up as ffn_gate_up where they share their input:
        one kernel call each per token instead of three and two (see QLinearGroup)."""
        if b.attn_qkv is None:
            b.attn_qkv = QLinearGroup.of([b.attn_q, b.attn_k, b.attn_v])
        b.ffn_gate_up = QLinearGroup.of([b.ffn_gate, b.ffn_up])

    def _rope_scaling(self, b: Block, swa_rope: bool) -> RopeScaling:
        # llama.cpp: sliding layers rotate with freq_scale_swa, which is 1 (no scaling)
        # unless the family copies the global scale (gemma2, gpt-oss); Gemma 3 4B+ scale only global.
        if swa_rope and self.spec.swa_rope == "own":
            return RopeScaling()
        return mla_rope_scaling(self.config) if b.mla is not None else self.config.rope_scaling

    def _rope_base(self, swa: bool) -> float:
        """A sliding-window layer's base: the file's rope.freq_base_swa; without one, the global
        base for swa_rope "global" (gpt-oss) and llama.cpp's default 10000 otherwise."""
        c = self.config
        if not swa:
            return c.rope_freq_base
        if c.rope_freq_base_swa is None:
            return c.rope_freq_base if self.spec.swa_rope == "global" else 10000.0
        return c.rope_freq_base_swa

    def _shared_rope(self, params: RopeParams) -> Rope:
        """One Rope per distinct parameter set, shared by the layers that use it."""
        key = (params.n_rot, params.base, params.style, params.scaling)
        if key not in self._ropes:
            self._ropes[key] = Rope(params)
        return self._ropes[key]

    def _attention_scale(self) -> float:
        c = self.config
        if c.kv_lora_rank > 0:
            return mla_attention_scale(c)
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

    def forward(self, ids: torch.Tensor, cache: KVCache, all_logits: bool = False,
                hidden: bool = False) -> torch.Tensor:
        """Run T new tokens at positions cache.length.. ; returns logits (T, V) or (1, V), or
        with hidden=True the final normed hidden states (T, D) (embeddings)."""
        start = cache.length
        pos = torch.arange(start, start + ids.numel())
        x = self.embed(ids).contiguous()                        # (T, D), this step's own
        for b in self.blk:
            x = self._block_forward(b, x, pos, cache)
        cache.advance(ids.numel())
        if hidden:
            return self.output_norm(x)
        if not all_logits:
            x = x[-1:]
        return self.logits(x)

    def forward_batch(self, ids: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """One new token for each of N sequences: ids (N,), row i at position caches[i].length
        of its own cache; returns logits (N, V). Every weight is read once for the N rows (the
        decode kernels take up to DECODE_MAX_ROWS rows and compute each row as they compute one,
        so row i equals forward() on sequence i alone: tests/test_batch.py); attention runs per
        sequence on its own cache."""
        if not 0 < len(caches) == ids.numel() <= DECODE_MAX_ROWS:
            raise ValueError(f"forward_batch takes 1..{DECODE_MAX_ROWS} sequences with one token "
                             f"each, got {ids.numel()} tokens for {len(caches)} caches")
        for cache in caches:
            cache.check_room(1)
        pos = torch.tensor([cache.length for cache in caches])
        x = self.embed(ids).contiguous()                        # (N, D)
        for b in self.blk:
            step = self._decode_step(b)
            if step is not None:               # one native call for the N rows, x in place
                cos, sin = b.rope.cos_sin(pos)
                step.rows(x, cos.contiguous(), sin.contiguous(), [cache.k[b.index] for cache in caches],
                          [cache.v[b.index] for cache in caches], pos.tolist())
                if not step.has_ffn:
                    x = self._ffn_residual(b, x)
            else:
                x = self._residuals(b, x, lambda n: self._attention_rows(b, n, pos, caches))
        for cache in caches:
            cache.advance(1)
        return self.logits(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        x = self.output_norm(x)
        out = self.output(x)                                    # (T, V)
        if c.logit_scale:
            out = out / c.logit_scale
        return per_row(lambda rows: softcap(rows, c.final_logit_softcapping), out)

    def _block_forward(self, b: Block, x: torch.Tensor, pos: torch.Tensor,
                       cache: KVCache) -> torch.Tensor:
        step = self._decode_step(b) if x.shape[0] == 1 else None
        if step is None:
            return self._residuals(b, x, lambda n: self._attention(b, n, pos, cache))
        cos, sin = b.rope.cos_sin(pos)         # one native call: attention (+ FFN), x in place
        step(x, cos, sin, cache.k[b.index], cache.v[b.index], cache.length)
        return x if step.has_ffn else self._ffn_residual(b, x)

    def _residuals(self, b: Block, x: torch.Tensor, attend) -> torch.Tensor:
        """The block by its plan's residual: sequential x + attn(norm(x)), then _ffn_residual;
        parallel x + (attn(n) + ffn(m)), n = attn_norm(x), m = ffn_norm(x) where the block has
        its own FFN norm (Falcon 40B), else n (llama.cpp's phi2 / falcon order)."""
        n = b.attn_norm(x) if b.attn_norm is not None else x
        h = attend(n)
        if b.post_attention_norm is not None:
            h = b.post_attention_norm(h)
        if b.plan.residual == "parallel":
            return x + (h + self._ffn_out(b, b.ffn_norm(x) if b.ffn_norm is not None else n))
        return self._ffn_residual(b, x + self._scaled(h))

    def _scaled(self, h: torch.Tensor) -> torch.Tensor:
        scale = self.config.residual_scale
        return h * scale if scale else h

    def _ffn_residual(self, b: Block, x: torch.Tensor) -> torch.Tensor:
        """x + FFN(ffn_norm(x)), with the block's post-FFN norm and residual scale."""
        return x + self._scaled(self._ffn_out(b, b.ffn_norm(x) if b.ffn_norm is not None else x))

    def _ffn_out(self, b: Block, h: torch.Tensor) -> torch.Tensor:
        h = b.moe(h) if b.moe is not None else self._ffn(b, h)
        return b.post_ffw_norm(h) if b.post_ffw_norm is not None else h

    def _decode_step(self, b: Block) -> BlockStep | None:
        """Block b's one-token step as one native call (quant.kernels.block_step), bound on first
        use per GGUF_RUNTIME_KERNELS value; None where it cannot run it (MLA, non-native weights):
        then the ops below run one by one, with the same results."""
        key = (b.index, env_spec())
        if key not in self._steps:
            self._steps[key] = None if b.mla is not None else self._bind_step(b)
        return self._steps[key]

    def _bind_step(self, b: Block) -> BlockStep | None:
        c, i = self.config, b.index
        weights = BlockWeights(
            plan=b.plan.as_dict(), qkv=b.attn_qkv, attn_output=b.attn_output,
            gate_up=b.ffn_gate_up, down=b.ffn_down,
            attn_norm=_vector(b.attn_norm), q_norm=_vector(b.attn_q_norm), k_norm=_vector(b.attn_k_norm),
            post_attention_norm=_vector(b.post_attention_norm), ffn_norm=_vector(b.ffn_norm),
            post_ffw_norm=_vector(b.post_ffw_norm),
            biased_norms=any(n is not None and n.bias is not None for n in (
                b.attn_norm, b.attn_q_norm, b.attn_k_norm, b.post_attention_norm, b.ffn_norm, b.post_ffw_norm)))
        shape = BlockShape(
            d=c.embedding_length, n_head=c.head_count[i], n_kv=c.head_count_kv[i], dk=c.key_length,
            dv=c.value_length, n_rot=b.rope.p.n_rot, neox=b.rope.p.style == "neox", window=b.window,
            eps=c.norm_epsilon, attn_scale=self.attn_scale, attn_cap=c.attn_logit_softcapping or 0.0,
            residual_scale=c.residual_scale or 0.0)
        return bind_block(weights, shape) if b.attn_qkv is not None else None

    def _attention(self, b: Block, x: torch.Tensor, pos: torch.Tensor,
                   cache: KVCache) -> torch.Tensor:
        n_tok = x.shape[0]
        q, k, v = b.mla.qkv(x, b.rope, pos) if b.mla is not None else self._qkv(b, x, pos)
        keys, values, k_pos = cache.update(b.index, k, v, b.window)  # (Hkv, S, Dk), (Hkv, S, Dv)
        # One new token sees every cached key the cache handed back (the window is sliced).
        mask = causal_mask(pos, k_pos, b.window) if n_tok > 1 else None
        out = attention(q.transpose(0, 1), keys, values, mask, self.attn_scale,
                        self.config.attn_logit_softcapping, b.attn_sinks)          # (T, H*Dv)
        if b.mla is not None:
            out = b.mla.values(out)
        return b.attn_output(out)

    def _attention_rows(self, b: Block, x: torch.Tensor, pos: torch.Tensor,
                        caches: list[KVCache]) -> torch.Tensor:
        """_attention for N rows of N sequences: projections over all rows at once, then row i
        attends to its own cache (which stores its key and value at pos[i])."""
        q, k, v = b.mla.qkv(x, b.rope, pos) if b.mla is not None else self._qkv(b, x, pos)
        q = q.transpose(0, 1)                                           # (H, N, Dk)
        outs = []
        for i, cache in enumerate(caches):
            keys, values, _ = cache.update(b.index, k[i:i + 1], v[i:i + 1], b.window)
            outs.append(attention(q[:, i:i + 1], keys, values, None, self.attn_scale,
                                  self.config.attn_logit_softcapping, b.attn_sinks))  # (1, H*Dv)
        out = torch.cat(outs)
        if b.mla is not None:
            out = b.mla.values(out)
        return b.attn_output(out)

    def _qkv(self, b: Block, x: torch.Tensor, pos: torch.Tensor):
        """x (T, D) -> q (T, H, Dk), k (T, Hkv, Dk), v (T, Hkv, Dv), normed and rotated."""
        c, i, n_tok = self.config, b.index, x.shape[0]
        n_head, n_kv, dk, dv = c.head_count[i], c.head_count_kv[i], c.key_length, c.value_length
        if b.attn_qkv is not None:
            q, k, v = b.attn_qkv(x).split([n_head * dk, n_kv * dk, n_kv * dv], dim=-1)
        else:
            q, k, v = b.attn_q(x), b.attn_k(x), b.attn_v(x)
        q, k = self._qk_norm(b, q, k, per_head=False)
        q = q.reshape(n_tok, n_head, dk)                        # (T, H, Dk)
        k = k.reshape(n_tok, n_kv, dk)                          # (T, Hkv, Dk)
        v = v.reshape(n_tok, n_kv, dv)                          # (T, Hkv, Dv)
        q, k = self._qk_norm(b, q, k, per_head=True)
        cos, sin = b.rope.cos_sin(pos)
        return b.rope.apply(q, cos, sin), b.rope.apply(k, cos, sin), v

    @staticmethod
    def _qk_norm(b: Block, q: torch.Tensor, k: torch.Tensor,
                 per_head: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's Q/K RMSNorm when its plan's kind is the one asked: "head" (qwen3: of Dk,
        per head, after the split) or "whole" (OLMoE: of H*Dk, over the projection, before)."""
        if b.plan.qk_norm != ("head" if per_head else "whole"):
            return q, k
        return b.attn_q_norm(q), b.attn_k_norm(k)

    def _ffn(self, b: Block, x: torch.Tensor) -> torch.Tensor:
        """The dense FFN by the plan's kind (gated, gated_fused, plain)."""
        act = b.plan.activation
        if b.ffn_gate_up is not None:
            return b.ffn_down(b.ffn_gate_up.gated(x, act))
        up = b.ffn_up(x)
        if b.plan.ffn == "plain":
            return b.ffn_down(activation(up, act))
        if b.ffn_gate is not None:
            gate = b.ffn_gate(x)
        else:                                                   # fused [gate; up] (phi3)
            gate, up = up.chunk(2, dim=-1)
        return b.ffn_down(gated_activation(gate, up, act))


def _vector(norm: Norm | None) -> torch.Tensor | None:
    return norm.weight if norm is not None else None
