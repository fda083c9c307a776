"""Tiny random Hugging Face models, one per architecture the converter supports.

Each `TinyCase` builds a `transformers` causal LM small enough to run in well under a second
(hidden 64, 4 query heads over 2 kv heads, vocab 256, 2 layers unless the architecture needs
more to show both layer kinds) and saves it as a Hugging Face folder (config.json +
model.safetensors). The configs stay within what llama.cpp also runs: eager attention, Gemma's
query scale equal to the head dim, no Phi-3 or Mistral sliding window (llama.cpp ignores both).

Every parameter is redrawn (`randomize`): transformers initialises norms to ones (zeros for
Gemma) and biases to zero, which would hide a dropped bias or a missing Gemma `w + 1`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB = 64, 4, 2, 16, 128, 256
COMMON = dict(hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=2,
              num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, vocab_size=VOCAB,
              max_position_embeddings=128, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2,
              pad_token_id=0)
# Widths whose rows are whole K-quant blocks (256), so a Q4_K_M file really holds Q4_K / Q6_K
# matrices (tests/test_precision.py); Gemma's query scale follows its head dim.
WIDE = dict(hidden_size=256, intermediate_size=512, head_dim=64)
WIDE_GEMMA = dict(WIDE, query_pre_attn_scalar=64)
GEMMA = dict(head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM,
             hidden_activation="gelu_pytorch_tanh")


@dataclass(frozen=True)
class TinyCase:
    """One tiny model: transformers config class name and its keyword arguments."""

    name: str
    gguf_arch: str                     # general.architecture the converter should write
    config_class: str
    model_class: str
    config: dict = field(default_factory=dict)
    window: int = 0                    # sliding window, so tests can use a longer sequence

    def build(self, seed: int = 0, **overrides) -> torch.nn.Module:
        """The float32 model in eval mode with eager attention, parameters drawn from `seed`;
        `overrides` replace config values (e.g. WIDE)."""
        import transformers

        torch.manual_seed(seed)
        cfg = getattr(transformers, self.config_class)(**{**COMMON, **self.config, **overrides})
        cfg._attn_implementation = "eager"
        model = getattr(transformers, self.model_class)(cfg).float().eval()
        randomize(model, seed)
        return model

    def save(self, model: torch.nn.Module, folder: Path) -> Path:
        """save_pretrained as safetensors into `folder`; returns it."""
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder)
        return folder


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Redraw every parameter: matrices N(0, 0.1), vectors (norms, biases) = init + N(0, 0.1).

    The draws are numpy's (the same numbers on every CPU): torch.randn takes another algorithm
    where ATen has AVX2 than where it has not, so the committed fixtures would hold only on the
    one kind of CPU."""
    gen = np.random.default_rng(seed + 1)
    for _, p in sorted(model.named_parameters()):
        noise = torch.from_numpy(gen.standard_normal(tuple(p.shape), dtype=np.float32))
        if p.ndim == 1:
            p.add_(noise * 0.1)
        else:
            p.copy_(noise * 0.1)


CASES: dict[str, TinyCase] = {c.name: c for c in [
    TinyCase("llama", "llama", "LlamaConfig", "LlamaForCausalLM"),
    TinyCase("llama-linear", "llama", "LlamaConfig", "LlamaForCausalLM", dict(
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})),
    TinyCase("llama3-rope", "llama", "LlamaConfig", "LlamaForCausalLM", dict(
        rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                         "rope_theta": 500000.0})),
    # head_dim 32 != hidden / heads: key_length is written and the Q/K permutation must use it.
    TinyCase("mistral", "llama", "MistralConfig", "MistralForCausalLM", dict(
        head_dim=32, sliding_window=None, tie_word_embeddings=False)),
    TinyCase("qwen2", "qwen2", "Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=True)),
    TinyCase("qwen2-yarn", "qwen2", "Qwen2Config", "Qwen2ForCausalLM", dict(
        rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0,
                         "original_max_position_embeddings": 32})),
    TinyCase("qwen3", "qwen3", "Qwen3Config", "Qwen3ForCausalLM", dict(
        head_dim=HEAD_DIM, tie_word_embeddings=True)),
    TinyCase("gemma", "gemma", "GemmaConfig", "GemmaForCausalLM", dict(
        head_dim=HEAD_DIM, hidden_act="gelu_pytorch_tanh")),
    # Small caps so tanh is far from linear; layer 0 slides (llama.cpp's period 2).
    TinyCase("gemma2", "gemma2", "Gemma2Config", "Gemma2ForCausalLM", dict(
        **GEMMA, sliding_window=4, attn_logit_softcapping=2.0, final_logit_softcapping=3.0),
        window=4),
    # Six layers: llama.cpp's default period (5 sliding, then 1 global); the global layers
    # use their own rope base and a linear scaling the sliding ones do not (as Gemma 3 4B+).
    TinyCase("gemma3", "gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        **GEMMA, num_hidden_layers=6, sliding_window=4,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0,
                                            "rope_theta": 1_000_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}),
        window=4),
    # Layer kinds that are not llama.cpp's period: written as a per-layer pattern array.
    TinyCase("gemma3-layer-types", "gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM", dict(
        **GEMMA, sliding_window=4, layer_types=["full_attention", "sliding_attention"],
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 100_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}}),
        window=4),
    TinyCase("phi3", "phi3", "Phi3Config", "Phi3ForCausalLM", dict(
        sliding_window=None, partial_rotary_factor=0.5, original_max_position_embeddings=128)),
    # LayerNorm families (gguf_runtime/models/phi.py, stablelm.py, starcoder2.py): biases on the
    # norms; phi2 parallel with a plain GELU FFN and a biased head (llama.cpp writes
    # head_count_kv = head_count and feed_forward_length = 4 * n_embd for phi2: kept so here).
    TinyCase("phi2", "phi2", "PhiConfig", "PhiForCausalLM", dict(
        num_key_value_heads=HEADS, intermediate_size=4 * HIDDEN, hidden_act="gelu_new",
        partial_rotary_factor=0.5)),
    TinyCase("stablelm", "stablelm", "StableLmConfig", "StableLmForCausalLM", dict(
        use_qkv_bias=True, partial_rotary_factor=0.5)),
    TinyCase("stablelm-parallel", "stablelm", "StableLmConfig", "StableLmForCausalLM", dict(
        use_parallel_residual=True, partial_rotary_factor=0.25)),
    TinyCase("starcoder2", "starcoder2", "Starcoder2Config", "Starcoder2ForCausalLM", dict(
        sliding_window=None, hidden_act="gelu_pytorch_tanh", use_bias=True)),
    # Falcon 40B's layout: two norms (ln_attn, ln_mlp), grouped QKV rows reordered; GELU with
    # tanh as llama.cpp runs falcon's (transformers' default is the erf form)
    TinyCase("falcon", "falcon", "FalconConfig", "FalconForCausalLM", dict(
        new_decoder_architecture=True, num_kv_heads=KV_HEADS, ffn_hidden_size=2 * HIDDEN,
        activation="gelu_pytorch_tanh", layer_norm_epsilon=1e-5)),
    # Falcon 7B's: one norm, multi-query attention
    TinyCase("falcon-7b", "falcon", "FalconConfig", "FalconForCausalLM", dict(
        new_decoder_architecture=False, multi_query=True, ffn_hidden_size=2 * HIDDEN,
        activation="gelu_pytorch_tanh", layer_norm_epsilon=1e-5)),
    # post-norms only, Q/K norms over the whole projection
    TinyCase("olmo2", "olmo2", "Olmo2Config", "Olmo2ForCausalLM"),
    # Granite's four multipliers, each off 1 so a dropped one shows.
    TinyCase("granite", "granite", "GraniteConfig", "GraniteForCausalLM", dict(
        embedding_multiplier=2.0, logits_scaling=4.0, residual_multiplier=0.5,
        attention_multiplier=0.2)),
]}


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


# ------------------------------------------------------------------ tiny tokenizers
TEXT = ("The quick brown fox jumps over the lazy dog. It's 2024 and we've got 12345 apples, "
        "don't we? Hello world! Hello, World... tokenizers split words, numbers and    spaces.\n"
        "A second line\twith a tab; the end.") * 3
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}")


def write_bpe_tokenizer(folder: Path, vocab_size: int, split_regex: str | None = None) -> None:
    """A byte-level BPE tokenizer.json (+ tokenizer_config.json) trained on TEXT.

    split_regex=None: GPT-2's ByteLevel splitting; else a Split(regex) then ByteLevel, as the
    Llama 3 / Qwen 2 tokenizers are built."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split_regex is None)
    tok.pre_tokenizer = byte_level if split_regex is None else pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(split_regex), behavior="isolated"), byte_level])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    tok.save(str(folder / "tokenizer.json"))
    write_json(folder / "tokenizer_config.json", {
        "bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "add_bos_token": False,
        "chat_template": CHAT_TEMPLATE})


def write_spm_tokenizer(folder: Path, vocab_size: int, byte_fallback: bool = True) -> None:
    """A SentencePiece BPE tokenizer.model trained on TEXT (ids: 0 <unk>, 1 <s>, 2 </s>), with
    byte fallback unless asked (its 256 byte pieces would not fit a 256-token model)."""
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT.split(". ")), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=byte_fallback, character_coverage=1.0, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, minloglevel=2, hard_vocab_limit=False)
    (folder / "tokenizer.model").write_bytes(model.getvalue())


def write_tiny_tokenizer(folder: Path) -> None:
    """A real vocabulary of exactly VOCAB pieces for the tiny models (llama.cpp's converter
    needs one; every dense family's reads tokenizer.model), ids matching the models' embedding
    rows and COMMON's bos 1 / eos 2. Unknown characters encode to <unk> (id 0)."""
    write_spm_tokenizer(folder, VOCAB, byte_fallback=False)


# ------------------------------------------------------------------ GGUF fingerprints
def gguf_tensor_table(path: Path) -> dict[str, dict]:
    """tensor name -> {type, shape (GGML order), sha256 of its data bytes}."""
    import hashlib

    from gguf import GGUFReader

    return {t.name: {"type": t.tensor_type.name, "shape": [int(s) for s in t.shape],
                     "sha256": hashlib.sha256(t.data.tobytes()).hexdigest()}
            for t in GGUFReader(path).tensors}


def gguf_metadata(path: Path) -> dict:
    """key -> value of every metadata key (the reader's own GGUF.* header fields left out)."""
    from gguf import GGUFReader

    return {k: f.contents() for k, f in GGUFReader(path).fields.items()
            if not k.startswith("GGUF.")}


def value_digest(value) -> str:
    """A short stable fingerprint of a metadata value (lists of tokens included)."""
    import hashlib

    return hashlib.sha256(json.dumps(value, default=repr).encode()).hexdigest()[:16]
