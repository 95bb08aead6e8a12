"""The GPT-2 block as transformers' `GPT2LMHeadModel`: tensor names and config.json fields.

GPT-2's `Conv1D` stores a weight as (in, out), the transpose of `nn.Linear`; its `c_attn` fuses
q, k, v in our order; it always has biases, so a run without them exports zeros. Our MLP's GELU
is the exact (erf) one by default, `activation_function="gelu"`; `activation=gelu_tanh` is
GPT-2's tanh approximation, `gelu_new` (or `gelu_pytorch_tanh`, the same function computed by one
fused kernel).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tinygpt.config import ModelConfig
from tinygpt.export.hf_blocks import BLOCKS, TensorPlacement

LAYER_NORM_EPS = nn.LayerNorm(1).eps  # what make_norm builds
# ModelConfig.activation as GPT-2's activation_function, and back (several names, one function)
GPT2_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu2": "relu2"}
FROM_GPT2_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu2": "relu2",
}


def gpt2_placements(config: ModelConfig) -> list[TensorPlacement]:
    """Where GPT2LMHeadModel holds each of our tensors."""
    placements = [
        TensorPlacement("wte.weight", ("transformer.wte.weight",)),
        TensorPlacement("wpe.weight", ("transformer.wpe.weight",)),
    ]
    for index in range(config.n_layer):
        ours, theirs = f"blocks.{index}.", f"transformer.h.{index}."
        for our_name, their_name, is_conv1d in (
            ("ln_1", "ln_1", False),
            ("attn.qkv", "attn.c_attn", True),
            ("attn.proj", "attn.c_proj", True),
            ("ln_2", "ln_2", False),
            ("mlp.fc", "mlp.c_fc", True),
            ("mlp.proj", "mlp.c_proj", True),
        ):
            weight = (f"{theirs}{their_name}.weight",)
            placements.append(
                TensorPlacement(f"{ours}{our_name}.weight", weight, transpose=is_conv1d)
            )
            bias = (f"{theirs}{their_name}.bias",)
            placements.append(TensorPlacement(f"{ours}{our_name}.bias", bias, is_bias=True))
    placements.append(TensorPlacement("ln_f.weight", ("transformer.ln_f.weight",)))
    placements.append(TensorPlacement("ln_f.bias", ("transformer.ln_f.bias",), is_bias=True))
    if not config.tie_weights:
        placements.append(TensorPlacement("lm_head.weight", ("lm_head.weight",)))
    return placements


def gpt2_config(config: ModelConfig) -> dict[str, Any]:
    """GPT2Config's own fields for `config`."""
    return {
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.ffn_width,
        "activation_function": GPT2_ACTIVATIONS[config.activation],
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "scale_attn_weights": True,  # 1/sqrt(head_dim), as SDPA
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
    }


def gpt2_model_fields(document: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig's fields from a GPT-2 config.json, and under "unsupported" what of it
    tinygpt cannot compute."""
    unsupported = []
    activation = document.get("activation_function", "gelu_new")  # transformers' default
    if activation not in FROM_GPT2_ACTIVATIONS:
        unsupported.append(
            f"activation_function={activation} (tinygpt's MLP takes "
            f"{', '.join(FROM_GPT2_ACTIVATIONS)})"
        )
    epsilon = document.get("layer_norm_epsilon", LAYER_NORM_EPS)
    if epsilon != LAYER_NORM_EPS:
        unsupported.append(f"layer_norm_epsilon={epsilon} (tinygpt's is {LAYER_NORM_EPS})")
    if not document.get("scale_attn_weights", True):
        unsupported.append("scale_attn_weights=false")
    for flag in ("scale_attn_by_inverse_layer_idx", "add_cross_attention"):
        if document.get(flag):
            unsupported.append(f"{flag}=true")
    n_embd = document["n_embd"]
    return {
        "unsupported": unsupported,
        "vocab_size": document["vocab_size"],
        "block_size": document["n_positions"],
        "n_layer": document["n_layer"],
        "n_head": document["n_head"],
        "n_embd": n_embd,
        "ffn_hidden": document.get("n_inner") or 4 * n_embd,
        "dropout": document.get("resid_pdrop", 0.0),
        "tie_weights": document.get("tie_word_embeddings", True),
        "activation": FROM_GPT2_ACTIVATIONS.get(activation, "gelu"),
        **BLOCKS["gpt2"],
    }
