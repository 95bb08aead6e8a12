"""The Llama block as transformers' `LlamaForCausalLM`: tensor names and config.json fields.

Our RoPE rotates channel pairs (i, i + D/2), Llama's `rotate_half` convention, so q and k need
no permutation; our fused qkv and [gate, up] matrices are split by rows.
"""

from __future__ import annotations

from typing import Any

from tinygpt.config import ModelConfig
from tinygpt.export.hf_blocks import BLOCKS, TensorPlacement
from tinygpt.model.norm import RMSNorm

RMS_NORM_EPS = RMSNorm(1).eps


def llama_placements(config: ModelConfig) -> list[TensorPlacement]:
    """Where LlamaForCausalLM holds each of our tensors."""
    kv_width = config.kv_heads * config.head_dim
    qkv_rows = (config.n_embd, kv_width, kv_width)
    placements = [TensorPlacement("wte.weight", ("model.embed_tokens.weight",))]
    for index in range(config.n_layer):
        ours, theirs = f"blocks.{index}.", f"model.layers.{index}."
        attention = tuple(f"{theirs}self_attn.{p}_proj.weight" for p in "qkv")
        gate_up = (f"{theirs}mlp.gate_proj.weight", f"{theirs}mlp.up_proj.weight")
        placements += [
            TensorPlacement(f"{ours}ln_1.weight", (f"{theirs}input_layernorm.weight",)),
            TensorPlacement(f"{ours}attn.qkv.weight", attention, qkv_rows),
            TensorPlacement(f"{ours}attn.proj.weight", (f"{theirs}self_attn.o_proj.weight",)),
            TensorPlacement(f"{ours}ln_2.weight", (f"{theirs}post_attention_layernorm.weight",)),
            TensorPlacement(f"{ours}mlp.fc.weight", gate_up, (config.ffn_width, config.ffn_width)),
            TensorPlacement(f"{ours}mlp.proj.weight", (f"{theirs}mlp.down_proj.weight",)),
        ]
    placements.append(TensorPlacement("ln_f.weight", ("model.norm.weight",)))
    if not config.tie_weights:
        placements.append(TensorPlacement("lm_head.weight", ("lm_head.weight",)))
    return placements


def llama_config(config: ModelConfig) -> dict[str, Any]:
    """LlamaConfig's own fields for `config`."""
    return {
        "hidden_size": config.n_embd,
        "intermediate_size": config.ffn_width,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": RMS_NORM_EPS,
        # transformers 5 reads rope_parameters, 4.x rope_theta
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": config.dropout,
    }


def llama_model_fields(document: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig's fields from a Llama config.json, and under "unsupported" what of it
    tinygpt cannot compute."""
    unsupported = []
    activation = document.get("hidden_act", "silu")
    if activation != "silu":
        unsupported.append(f'hidden_act={activation} (tinygpt\'s gated MLP is SwiGLU, "silu")')
    for flag in ("attention_bias", "mlp_bias"):
        if document.get(flag):
            unsupported.append(f"{flag}=true")
    epsilon = document.get("rms_norm_eps", RMS_NORM_EPS)
    if epsilon != RMS_NORM_EPS:
        unsupported.append(f"rms_norm_eps={epsilon} (tinygpt's is {RMS_NORM_EPS})")
    n_embd, n_head = document["hidden_size"], document["num_attention_heads"]
    head_dim = document.get("head_dim") or n_embd // n_head
    if head_dim * n_head != n_embd:
        unsupported.append(f"head_dim={head_dim} (tinygpt's is hidden_size / num_attention_heads)")
    rope = document.get("rope_parameters") or document.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        unsupported.append(f"rope_type={rope_type} (tinygpt's RoPE has no scaling)")
    kv_heads = document.get("num_key_value_heads") or n_head
    return {
        "unsupported": unsupported,
        "vocab_size": document["vocab_size"],
        "block_size": document["max_position_embeddings"],
        "n_layer": document["num_hidden_layers"],
        "n_head": n_head,
        "n_kv_head": 0 if kv_heads == n_head else kv_heads,
        "n_embd": n_embd,
        "ffn_hidden": document["intermediate_size"],
        "rope_theta": float(rope.get("rope_theta", document.get("rope_theta", 10000.0))),
        "dropout": document.get("attention_dropout", 0.0),
        "tie_weights": document.get("tie_word_embeddings", False),
        **BLOCKS["llama"],
    }
