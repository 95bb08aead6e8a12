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
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft import __version__ as peft_version
from peft.tuners.lora import LoraLayer
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from tinygpt.atomic_files import write_bytes_atomic, write_text_atomic
from tinygpt.config import ModelConfig
from tinygpt.errors import CheckpointError, ConfigError
from tinygpt.model.gpt import GPT
from tinygpt.train.checkpoint import load_weights_into, sha256_of

ADAPTER_NAME = "default"  # peft's name for the one adapter we inject
ADAPTER_DIR = "adapter"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's file name; keys as peft saves them
ADAPTER_CONFIG = "adapter.json"
ADAPTER_FORMAT = "tinygpt-lora-adapter"
ADAPTER_VERSION = 1


@dataclass(frozen=True)
class LoraSettings:
    """The adapter's shape: rank, scale, dropout, and which Linear modules it adapts."""

    r: int = 8  # rank of the update B A
    alpha: float = 16.0  # the update is scaled by alpha / r
    targets: tuple[str, ...] = ("qkv", "proj")  # module names or name suffixes, e.g. attn.proj
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
    """The full names of the Linear modules that `targets` name, exactly or as a dotted suffix
    (peft's own rule): `proj` is every attn.proj and mlp.proj, `attn.proj` only the former."""
    available = linear_module_names(model)

    def matches(name: str, target: str) -> bool:
        return name == target or name.endswith("." + target)

    unmatched = [t for t in targets if not any(matches(name, t) for name in available)]
    if unmatched:
        raise ConfigError(
            f"--lora-targets {','.join(unmatched)} "
            f"{'matches' if len(unmatched) == 1 else 'match'} no Linear module; the model's are: "
            f"{describe_module_names(available)}"
        )
    return [name for name in available if any(matches(name, t) for t in targets)]


def describe_module_names(names: list[str]) -> str:
    """`blocks.0.attn.qkv, blocks.1.attn.qkv, lm_head` -> `blocks.N.attn.qkv, lm_head (N = 0-1)`:
    one line, however deep the model."""
    patterns = dict.fromkeys(re.sub(r"^blocks\.\d+\.", "blocks.N.", name) for name in names)
    blocks = sorted({int(m.group(1)) for n in names if (m := re.match(r"blocks\.(\d+)\.", n))})
    suffix = f" (N = {blocks[0]}-{blocks[-1]})" if blocks else ""
    return ", ".join(patterns) + suffix


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


# ----------------------------------------------------------------------------------------------
# Adapter files


def save_adapter(
    run_dir: Path, model: nn.Module, settings: LoraSettings, adapted: list[str], info: dict
) -> Path:
    """RUN_DIR/adapter/: the LoRA tensors (safetensors) and adapter.json (settings, base run,
    sha256 of the tensors). Each file is replaced atomically, tensors first; the sha256 lets a
    reader refuse a pair caught between the two renames."""
    directory = run_dir / ADAPTER_DIR
    directory.mkdir(parents=True, exist_ok=True)
    weights = save_safetensors(adapter_state_dict(model))
    document = {
        "format": ADAPTER_FORMAT,
        "version": ADAPTER_VERSION,
        "peft_type": "LORA",
        "peft_version": peft_version,
        "r": settings.r,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "targets": list(settings.targets),
        "target_modules": adapted,
        "weights": {"file": ADAPTER_WEIGHTS, "bytes": len(weights), "sha256": sha256_of(weights)},
        **info,
    }
    write_bytes_atomic(directory / ADAPTER_WEIGHTS, weights)
    write_text_atomic(directory / ADAPTER_CONFIG, json.dumps(document, indent=2) + "\n")
    return directory


def read_adapter(directory: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(adapter.json, LoRA tensors) of an adapter directory, checked against each other."""
    try:
        document = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        data = (directory / ADAPTER_WEIGHTS).read_bytes()
    except FileNotFoundError as err:
        raise CheckpointError(f"{directory} is not a tinygpt adapter (no {err.filename})") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory / ADAPTER_CONFIG} is unreadable ({err})") from None
    if not isinstance(document, dict) or document.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(f"{directory / ADAPTER_CONFIG} is not a tinygpt adapter")
    if sha256_of(data) != document.get("weights", {}).get("sha256"):
        raise CheckpointError(
            f"{directory / ADAPTER_WEIGHTS} does not match the sha256 in {ADAPTER_CONFIG}; "
            "it was replaced or corrupted"
        )
    try:
        return document, load_safetensors(data)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{directory / ADAPTER_WEIGHTS} cannot be read: {err}") from None


def apply_adapter(model: GPT, directory: Path) -> LoraSettings:
    """Wrap `model` (the base run's) with the adapter saved in `directory`, in place."""
    document, state = read_adapter(directory)
    settings = LoraSettings(
        r=int(document["r"]),
        alpha=float(document["lora_alpha"]),
        targets=tuple(document["target_modules"]),
        dropout=float(document["lora_dropout"]),
    )
    add_lora(model, settings)
    load_adapter_state_dict(model, state)
    return settings
