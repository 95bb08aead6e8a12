"""Our models as transformers' tensors and config.json, and back, for either block
(`hf_blocks.py`).

The exported config.json also keeps tinygpt's own ModelConfig under "tinygpt", so that an import
restores what transformers does not record (dropout, init, biases that were off), where that
leaves the arithmetic unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tinygpt.config import ModelConfig
from tinygpt.errors import CheckpointError, ConfigError
from tinygpt.export.hf_blocks import (
    BLOCK_NAMES,
    HF_CLASSES,
    SUPPORTED,
    Architecture,
    TensorPlacement,
)
from tinygpt.export.hf_gpt2 import gpt2_config, gpt2_model_fields, gpt2_placements
from tinygpt.export.hf_llama import llama_config, llama_model_fields, llama_placements
from tinygpt.model.gpt import GPT

# the files of a transformers model directory that are not the tokenizer's
CONFIG_FILE = "config.json"
GENERATION_FILE = "generation_config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
HINT_KEY = "tinygpt"  # our ModelConfig inside the exported config.json
# what an import may take from that hint: fields transformers does not record, or records
# another way; accepted only where the arithmetic stays the same
HINT_FIELDS = ("dropout", "init", "n_kv_head", "ffn_hidden", "bias")
# buffers some transformers versions save beside the weights: a causal mask, RoPE frequencies
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")


# ----------------------------------------------------------------------------------------------
# Tensors


def tensor_placements(config: ModelConfig, architecture: Architecture) -> list[TensorPlacement]:
    return gpt2_placements(config) if architecture == "gpt2" else llama_placements(config)


def to_hf_tensors(model: GPT, architecture: Architecture) -> dict[str, Tensor]:
    """The model's weights under transformers' names and layouts."""
    state = model.state_dict()
    tensors: dict[str, Tensor] = {}
    for placement in tensor_placements(model.config, architecture):
        tensor = state.get(placement.ours)
        if tensor is None and placement.is_bias:  # bias=False: GPT-2's biases are zeros
            weight = state[placement.ours.removesuffix(".bias") + ".weight"]
            tensor = torch.zeros(weight.shape[0], dtype=weight.dtype)
        assert tensor is not None, placement.ours
        parts = tensor.split(list(placement.rows)) if placement.rows else (tensor,)
        for name, part in zip(placement.theirs, parts, strict=True):
            part = part.t() if placement.transpose else part
            # clone: safetensors refuses tensors that share memory (split views, tied weights)
            tensors[name] = part.detach().cpu().contiguous().clone()
    return tensors


@dataclass(frozen=True)
class HFModule:
    """The transformers modules that hold one of our modules."""

    names: tuple[str, ...]  # several: our fused matrix is theirs stacked by rows
    rows: tuple[int, ...] = ()  # with several: the output rows of each


def hf_modules(config: ModelConfig, architecture: Architecture) -> dict[str, HFModule]:
    """Our modules with a weight, by name -> where the exported model holds them: the names a
    LoRA adapter of the exported model is keyed by. `lm_head` is named even when tied (it is
    then a transformers Linear sharing the embedding's matrix)."""
    modules = {"lm_head": HFModule(("lm_head",))}
    for placement in tensor_placements(config, architecture):
        if placement.ours.endswith(".weight"):
            theirs = tuple(name.removesuffix(".weight") for name in placement.theirs)
            modules[placement.ours.removesuffix(".weight")] = HFModule(theirs, placement.rows)
    return modules


def from_hf_tensors(
    tensors: dict[str, Tensor], config: ModelConfig, architecture: Architecture, source: Path
) -> dict[str, Tensor]:
    """Our state dict from transformers' tensors (tied weights stored once, as checkpoints do)."""
    state: dict[str, Tensor] = {}
    used: set[str] = set()
    for placement in tensor_placements(config, architecture):
        missing = [name for name in placement.theirs if name not in tensors]
        if missing:
            raise CheckpointError(
                f"{source} has no tensor {missing[0]}; the weights do not match config.json"
            )
        used.update(placement.theirs)
        if placement.is_bias and not config.bias:
            continue  # zeros: chosen only when every bias is zero
        parts = [
            tensors[name].t() if placement.transpose else tensors[name] for name in placement.theirs
        ]
        state[placement.ours] = torch.cat(parts) if len(parts) > 1 else parts[0].contiguous()
    ignored = {"lm_head.weight"} if config.tie_weights else set()
    unexpected = sorted(
        name for name in set(tensors) - used - ignored if not name.endswith(IGNORED_SUFFIXES)
    )
    if unexpected:
        raise CheckpointError(
            f"{source} has tensors tinygpt's {BLOCK_NAMES[architecture]} block lacks "
            f"({', '.join(unexpected[:3])}); it is not a plain {HF_CLASSES[architecture]}"
        )
    return state


# ----------------------------------------------------------------------------------------------
# config.json


def hf_config(
    config: ModelConfig, architecture: Architecture, special_ids: dict[str, int | None], dtype: str
) -> dict[str, Any]:
    """transformers' config.json of the model."""
    common = {
        "architectures": [HF_CLASSES[architecture]],
        "model_type": architecture,
        "vocab_size": config.vocab_size,  # may be padded beyond the tokenizer's
        "tie_word_embeddings": config.tie_weights,
        **special_ids,
        "initializer_range": 0.02,
        "use_cache": True,
        "dtype": dtype,
    }
    block_fields = gpt2_config(config) if architecture == "gpt2" else llama_config(config)
    return {**common, **block_fields, HINT_KEY: {"model": dataclasses.asdict(config)}}


def model_config_from_hf(
    document: dict[str, Any], tensors: dict[str, Tensor], source: Path
) -> tuple[ModelConfig, Architecture]:
    """Our ModelConfig for a transformers config.json; a ConfigError for what we cannot run."""
    architecture = hf_model_type(document, source)
    try:
        fields = (
            gpt2_model_fields(document) if architecture == "gpt2" else llama_model_fields(document)
        )
    except KeyError as err:
        raise CheckpointError(f"{source / CONFIG_FILE} lacks {err}") from None
    except TypeError as err:
        raise CheckpointError(f"{source / CONFIG_FILE} has a malformed value ({err})") from None
    unsupported = fields.pop("unsupported")
    if unsupported:
        raise ConfigError(
            f"cannot import {source}: {', '.join(unsupported)}; tinygpt imports {SUPPORTED}"
        )
    config = ModelConfig(**fields)
    if config.ffn_width == dataclasses.replace(config, ffn_hidden=0).ffn_width:
        config = dataclasses.replace(config, ffn_hidden=0)
    hint = document.get(HINT_KEY)
    hint = hint.get("model") if isinstance(hint, dict) else None
    return _apply_hint(config, hint or {}, architecture, tensors), architecture


def hf_model_type(document: dict[str, Any], source: Path) -> Architecture:
    model_type = document.get("model_type")
    if model_type not in HF_CLASSES:
        raise ConfigError(
            f"cannot import {source}: model_type={model_type!r} is not supported; tinygpt "
            "imports model_type gpt2 (GPT2LMHeadModel) and llama (LlamaForCausalLM)"
        )
    return model_type


def _apply_hint(
    config: ModelConfig,
    hint: dict[str, Any],
    architecture: Architecture,
    tensors: dict[str, Tensor],
) -> ModelConfig:
    """Take the exporting run's own values for fields transformers does not record, where they
    leave the arithmetic unchanged (a foreign or edited config.json cannot change the model)."""
    has_nonzero_bias = any(
        tensor.any()
        for name, tensor in tensors.items()
        if name.endswith(".bias") and not name.endswith(IGNORED_SUFFIXES)
    )
    for name in HINT_FIELDS:
        if name not in hint:
            continue
        try:
            candidate = dataclasses.replace(config, **{name: hint[name]})
        except (ConfigError, TypeError, ValueError):
            continue
        if (
            candidate.kv_heads == config.kv_heads
            and candidate.ffn_width == config.ffn_width
            and (candidate.bias or not has_nonzero_bias)
            and (architecture == "gpt2" or not candidate.bias)
        ):
            config = candidate
    return config
