"""What is inside a GGUF and whether this runtime can run it (the data behind `inspect`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from quant import QuantError, get_format
from quant.kernels.block_step import plan_supported

from .block_plan import plan_block
from .config import ModelConfig
from .errors import GGUFError
from .gguf_file import GGUFFile
from .moe import is_sparse, routing_problem
from .registry import detect


def kernels_of(type_name: str) -> dict[str, str]:
    """The backend per path (decode / prefill) a matrix of this type takes on this machine."""
    from gguf import GGMLQuantizationType as T
    from quant.kernels import type_kernels
    return type_kernels(T[type_name])


def runnable_problem(gf: GGUFFile) -> str | None:
    """None when the file can run here, else one line saying why not."""
    try:
        spec = detect(gf.metadata, str(gf.path))
        config = ModelConfig.from_gguf(gf.metadata, str(gf.path), spec.swa_pattern,
                                    spec.norm == "layer")
    except GGUFError as e:
        return str(e)
    if not spec.runnable:
        return f"architecture {spec.name!r}: {spec.not_runnable_reason}"
    if config.expert_count > 0 and not spec.moe:
        return f"{spec.name} with {config.expert_count} experts: Mixture-of-Experts decoding " \
               f"is not implemented for this architecture"
    problem = routing_problem(config, spec)
    if problem:
        return problem
    for t in gf.tensors.values():
        try:
            get_format(t.qtype)
        except QuantError as e:
            return f"tensor {t.name!r}: {e}"
    if "token_embd.weight" not in gf.tensors:
        return "no token_embd.weight tensor (vocabulary-only file?)"
    return None


def describe(gf: GGUFFile) -> dict[str, Any]:
    """Architecture, config, tokenizer, tensor-type histogram and runnability, as plain data."""
    meta = gf.metadata
    info: dict[str, Any] = {
        "path": str(gf.path),
        "gguf_version": gf.version,
        "architecture": gf.architecture,
        "name": meta.get("general.name"),
        "file_bytes": gf.nbytes,
    }
    try:
        spec = detect(meta, str(gf.path))
        config = ModelConfig.from_gguf(meta, str(gf.path), spec.swa_pattern, spec.norm == "layer")
        info["config"] = config.as_dict()
        info["rope_style"] = spec.rope_style
        info["block_plan"] = _first_block_plan(gf, spec, config)
    except GGUFError as e:
        info["config"] = None
        info["config_error"] = str(e)
    tokens = meta.get("tokenizer.ggml.tokens")
    info["tokenizer"] = {
        "model": meta.get("tokenizer.ggml.model"),
        "pre": meta.get("tokenizer.ggml.pre"),
        "vocab_size": len(tokens) if isinstance(tokens, list) else 0,
        "chat_template": isinstance(meta.get("tokenizer.chat_template"), str),
    }
    by_type: Counter = Counter()
    bytes_by_type: Counter = Counter()
    for t in gf.tensors.values():
        by_type[t.qtype.name] += 1
        bytes_by_type[t.qtype.name] += t.nbytes
    info["tensor_count"] = len(gf.tensors)
    info["tensor_types"] = {k: {"count": by_type[k], "bytes": bytes_by_type[k], "kernels": kernels_of(k)}
                            for k in sorted(by_type, key=lambda k: -bytes_by_type[k])}
    info["tensor_bytes"] = sum(bytes_by_type.values())
    info["parameters"] = sum(t.n_elements for t in gf.tensors.values())
    problem = runnable_problem(gf)
    info["runnable"] = problem is None
    if problem:
        info["not_runnable_reason"] = problem
    return info


def _first_block_plan(gf: GGUFFile, spec, config: ModelConfig) -> dict[str, Any] | None:
    """Block 0's plan (block_plan.py) and whether the native one-call step implements it."""
    try:
        plan = plan_block(spec, mla=config.kv_lora_rank > 0, sparse=is_sparse(config, 0),
                          has_ffn_norm=f"blk.0.{spec.ffn_norm}.weight" in gf.tensors,
                          has_qk_norm="blk.0.attn_q_norm.weight" in gf.tensors, where=str(gf.path),
                          has_sinks=spec.sinks and "blk.0.attn_sinks.weight" in gf.tensors)
    except GGUFError:
        return None
    return {**plan.as_dict(), "native_step": plan_supported(plan.as_dict())}


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def format_description(info: dict[str, Any]) -> str:
    """Human-readable text of `describe`'s result."""
    lines = [f"file:          {info['path']} (GGUF v{info['gguf_version']}, "
             f"{_mib(info['file_bytes'])})",
             f"name:          {info.get('name')}",
             f"architecture:  {info['architecture']}"]
    if info.get("config"):
        lines.append("config:")
        for k, v in info["config"].items():
            if v not in (0, 0.0, False, [], None) or k in ("sliding_window",):
                lines.append(f"  {k:32s} {v}")
    else:
        lines.append(f"config:        unavailable: {info.get('config_error')}")
    if plan := info.get("block_plan"):
        lines.append(f"block plan:    {plan['norm']} norm, {plan['residual']} residual, {plan['attention']} "
                     f"attention, Q/K norm {plan['qk_norm'] or 'none'}, {plan['ffn']} FFN ({plan['activation']}); "
                     f"native one-call decode step: {'yes' if plan['native_step'] else 'no (op by op)'}")
    tok = info["tokenizer"]
    if tok["model"] in (None, "none") or not tok["vocab_size"]:
        lines.append("tokenizer:     none: no vocabulary in the file, runs on token ids only")
    else:
        lines.append(f"tokenizer:     {tok['model']} (pre: {tok['pre']}), vocab {tok['vocab_size']:,}, "
                     f"chat template: {'yes' if tok['chat_template'] else 'no'}")
    lines.append(f"tensors:       {info['tensor_count']} ({info['parameters']:,} parameters, "
                 f"{_mib(info['tensor_bytes'])})")
    for name, row in info["tensor_types"].items():
        k = row["kernels"]
        how = (f"decode {k['decode']}, prefill {k['prefill']}"
               + (" (no fast kernel: dequantized tile by tile)" if k["decode"] == "reference" and name != "F32" else ""))
        lines.append(f"  {name:8s} {row['count']:5d} tensors  {_mib(row['bytes']):>14s}  {how}")
    verdict = "yes" if info["runnable"] else f"no: {info['not_runnable_reason']}"
    lines.append(f"runnable:      {verdict}")
    return "\n".join(lines)
