"""LoRA adapters on a trained GPT, through `peft` (Hu et al. 2021, https://arxiv.org/abs/2106.09685).

A LoRA layer keeps the pretrained weight W (out, in) frozen and learns a low-rank update:

    y = x W^T + (alpha / r) * dropout(x) A^T B^T       A (r, in), B (out, r), B = 0 at the start

so fine-tuning begins exactly at the base model, and trains r * (in + out) numbers per layer
instead of in * out.

Why `inject_adapter_in_model` and not `get_peft_model`: our GPT is a plain `nn.Module`, not a
transformers `PreTrainedModel`. `inject_adapter_in_model` is peft's entry point for such models:
it swaps each targeted `nn.Linear` for a `peft.tuners.lora.Linear` in place and returns the same
module, so `model.loss(x, y)`, `hidden_states` and the KV cache keep working unchanged. It has
no `merge_and_unload`; `merged_model` applies W + (alpha / r) B A by hand into a fresh GPT,
which also never writes into the base weights (peft merges in place, and with tied weights an
in-place merge into `lm_head` would change the token embedding too).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn

from tinygpt.config import ModelConfig
from tinygpt.errors import CheckpointError, ConfigError
from tinygpt.model.gpt import GPT
from tinygpt.run.load import load_weights_into

ADAPTER_NAME = "default"  # peft's name for the one adapter we inject


@dataclass(frozen=True)
class LoraSettings:
    """The adapter's shape: rank, scale, dropout, and which Linear modules it adapts."""

    r: int = 8  # rank of the update B A
    alpha: float = 16.0  # the update is scaled by alpha / r
    targets: tuple[str, ...] = ("qkv", "proj")  # dotted name endings; proj: attn and mlp
    dropout: float = 0.05  # on the adapter's input only

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ConfigError(f"--lora-r {self.r} must be greater than 0 (the rank of B A)")
        if not self.alpha > 0:
            raise ConfigError(f"--lora-alpha {self.alpha} must be greater than 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--lora-dropout {self.dropout} must be in [0, 1)")
        if not self.targets or not all(self.targets):
            raise ConfigError(
                "--lora-targets needs comma-separated module names, e.g. qkv,proj or attn.proj"
            )

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def parse_targets(text: str) -> tuple[str, ...]:
    """`"qkv, proj"` -> `("qkv", "proj")`; empty parts are kept, so LoraSettings refuses them."""
    return tuple(part.strip() for part in text.split(","))


# ----------------------------------------------------------------------------------------------
# Wrapping


def linear_module_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def resolve_targets(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """The full names of the Linear modules that `targets` name. A target matches a module
    whose dotted name ends with the target's whole components (peft's own rule): `attn.proj`
    is every block's attention output, `mlp.proj` the MLP's, and a bare `proj` both; `roj`
    matches nothing. `describe_adapted` lists what matched, so a broad target is never silent."""
    available = linear_module_names(model)
    unmatched = [t for t in targets if not any(_ends_with_components(n, t) for n in available)]
    if unmatched:
        endings = dict.fromkeys(name.rpartition(".")[2] for name in available)
        raise ConfigError(
            f"--lora-targets {','.join(unmatched)} "
            f"{'matches' if len(unmatched) == 1 else 'match'} no Linear module; give names such "
            f"as {', '.join(endings)}, or dotted endings of the model's Linear modules: "
            f"{group_module_names(available)}"
        )
    return [name for name in available if any(_ends_with_components(name, t) for t in targets)]


def _ends_with_components(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def group_module_names(names: list[str]) -> str:
    """`blocks.0.attn.qkv, blocks.1.attn.qkv, lm_head` -> `blocks.{0,1}.attn.qkv, lm_head`:
    one line, however deep the model (`blocks.{0-11}.mlp.fc`)."""
    layers: dict[str, list[int]] = {}
    for name in names:
        match = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
        key = match.group(2) if match else name
        layers.setdefault(key, []).extend([int(match.group(1))] if match else [])
    return ", ".join(
        f"blocks.{_index_set(indices)}.{key}" if indices else key for key, indices in layers.items()
    )


def _index_set(indices: list[int]) -> str:
    """[3] -> `3`; [0, 1] -> `{0,1}`; [0, 1, 2, 5] -> `{0-2,5}`."""
    if len(indices) == 1:
        return str(indices[0])
    runs: list[list[int]] = []
    for index in sorted(set(indices)):
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    parts = [",".join(map(str, run)) if len(run) < 3 else f"{run[0]}-{run[-1]}" for run in runs]
    return "{" + ",".join(parts) + "}"


def describe_adapted(settings: LoraSettings, adapted: list[str]) -> str:
    """`LoRA r=8 on 4 modules: blocks.{0,1}.attn.qkv, blocks.{0,1}.attn.proj`"""
    return f"LoRA r={settings.r} on {len(adapted)} modules: {group_module_names(adapted)}"


def add_lora(model: GPT, settings: LoraSettings) -> list[str]:
    """Inject LoRA into the Linear modules `settings.targets` name, in place, and freeze every
    other parameter. Returns the adapted module names. The A matrices draw from torch's global
    RNG: seed it first for a reproducible start."""
    names = resolve_targets(model, settings.targets)
    peft_config = LoraConfig(
        target_modules=names,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        bias="none",
    )
    inject_adapter_in_model(peft_config, model, adapter_name=ADAPTER_NAME)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = is_lora_parameter(name)
    return names


def is_lora_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total); a tied weight counts once."""
    parameters = list(model.parameters())
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    return trainable, sum(p.numel() for p in parameters)


def describe_parameters(model: nn.Module) -> str:
    trainable, total = count_parameters(model)
    return f"trainable {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)"


def lora_layers(model: nn.Module) -> dict[str, LoraLayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The LoRA tensors alone, keyed as peft saves them (`blocks.0.attn.qkv.lora_A.weight`)."""
    # save_embedding_layers=False: peft would otherwise take `lm_head` for an embedding and
    # warn that it cannot find it (our model is not a transformers model)
    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    return {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()}


def load_adapter_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy saved LoRA tensors into a model that `add_lora` wrapped the same way."""
    own = {name.replace(f".{ADAPTER_NAME}.", "."): p for name, p in model.named_parameters()}
    missing = sorted(name for name in own if is_lora_parameter(name) and name not in state)
    unexpected = sorted(name for name in state if name not in own)
    if missing or unexpected:
        raise CheckpointError(
            f"the adapter does not fit this model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); use the base run and targets it was trained with"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            own[name].copy_(tensor)


# ----------------------------------------------------------------------------------------------
# Merging


def merged_model_config(config: ModelConfig, adapted: list[str]) -> ModelConfig:
    """A LoRA on a tied `lm_head` changes the output matrix but not the token embedding, so the
    merged model has the two matrices apart."""
    if "lm_head" in adapted and config.tie_weights:
        return dataclasses.replace(config, tie_weights=False)
    return config


def merged_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The weights of a plain GPT equal to `model` with its adapters: W + (alpha / r) B A for
    every adapted Linear, every other tensor as it is (copies; `model` is left untouched)."""
    layers = lora_layers(model)
    state: dict[str, Tensor] = {}
    for name, tensor in model.state_dict().items():
        if ".lora_" in name:
            continue
        state[name.replace(".base_layer.", ".")] = tensor.detach().clone()
    with torch.no_grad():
        for name, layer in layers.items():
            A = layer.lora_A[ADAPTER_NAME].weight  # (r, in)
            B = layer.lora_B[ADAPTER_NAME].weight  # (out, r)
            delta = (B.float() @ A.float()) * layer.scaling[ADAPTER_NAME]  # (out, in)
            weight = state[f"{name}.weight"]
            state[f"{name}.weight"] = (weight.float() + delta).to(weight.dtype)
    return state


def merged_model(model: nn.Module, config: ModelConfig) -> GPT:
    """A fresh GPT of shape `config` (from `merged_model_config`) holding `model`'s merged
    weights: what `tinygpt sample` and export load."""
    merged = GPT(config)
    load_weights_into(merged, merged_state_dict(model))
    device = next(model.parameters()).device
    return merged.to(device).eval()
