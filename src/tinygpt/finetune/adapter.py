"""A LoRA adapter on disk in peft's layout, so that `peft.PeftModel.from_pretrained` puts it on
the base run as `tinygpt export` writes it:

    NEW_RUN_DIR/adapter/
      adapter_config.json        peft's LoraConfig (r, lora_alpha, target_modules, ...)
      adapter_model.safetensors  base_model.model.<module>.lora_A.weight and .lora_B.weight
      adapter.json               tinygpt's record: the settings, the base run and the sha256 of
                                 its weights, the sha256 of the two files above

The modules carry the exported model's names (GPT2LMHeadModel's transformer.h.0.attn.c_attn,
LlamaForCausalLM's model.layers.0.self_attn.q_proj), and the arithmetic carries over exactly:

- GPT-2's Conv1D stores its weight transposed, but peft's LoRA on a Conv1D keeps A (r, in) and
  B (out, r) as on a Linear (only merging transposes: fan_in_fan_out), so A and B go as they are.
- Llama splits our fused qkv (and [gate, up]) by rows, and B A splits the same way: rows i of
  B A are (rows i of B) A. So q_proj gets A and B's q rows, k_proj the same A and B's k rows,
  and so on: peft cannot share one A between modules, but three copies of it are exact.

A model no transformers class computes (hybrid attention, adaptive softmax, ...) is exported
with its own code (`tinygpt.export.hf_custom`), whose TinyGPTForCausalLM holds the GPT as
`model`: its adapter carries those names (model.blocks.0.attn.qkv), in the same layout.
Adapters saved before that kept tinygpt's bare names (blocks.0.attn.qkv) and still load.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from peft import __version__ as peft_version
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from tinygpt.atomic_files import write_bytes_atomic
from tinygpt.config import ModelConfig
from tinygpt.errors import CheckpointError
from tinygpt.export.hf_blocks import hf_export_problems
from tinygpt.export.hf_custom import PREFIX as REMOTE_CODE_PREFIX
from tinygpt.export.hf_layout import HFModule, hf_modules
from tinygpt.finetune.lora import (
    LoraSettings,
    adapter_state_dict,
    add_lora,
    load_adapter_state_dict,
)
from tinygpt.model.gpt import GPT
from tinygpt.run.directory import sha256_of

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
PEFT_CONFIG = "adapter_config.json"  # peft's file names
ADAPTER_WEIGHTS = "adapter_model.safetensors"
RECORD = "adapter.json"
RECORD_FORMAT = "tinygpt-lora-adapter"
# 2: peft's layout in the exported model's names; 1: tinygpt's names, no adapter_config.json
RECORD_VERSION = 2
PEFT_PREFIX = "base_model.model."  # what PeftModel puts before the wrapped model's names
TINYGPT_NAMES = "tinygpt"  # tinygpt's own module names, as older adapters saved them
REMOTE_CODE_NAMES = "tinygpt-remote-code"  # the names in an export with its own code


@dataclass(frozen=True)
class ModuleNames:
    """The names an adapter's modules are saved under: a transformers architecture's, or
    those of tinygpt's export with its own code where the model has none."""

    kind: str  # gpt2, llama, tinygpt-remote-code, or (older adapters) tinygpt
    modules: dict[str, HFModule] = field(default_factory=dict)  # ours -> theirs
    reason: str = ""  # with the remote-code names: why no transformers class computes it

    def of(self, module: str) -> HFModule:
        if self.kind == TINYGPT_NAMES:
            return HFModule((module,))
        if self.kind == REMOTE_CODE_NAMES:
            return HFModule((REMOTE_CODE_PREFIX + module,))
        return self.modules[module]


def module_names_for(config: ModelConfig) -> ModuleNames:
    architecture, problems = hf_export_problems(config)
    if problems:
        return ModuleNames(REMOTE_CODE_NAMES, reason="; ".join(problems))
    return ModuleNames(architecture, hf_modules(config, architecture))


def log_module_names(names: ModuleNames) -> None:
    """Say once, in one line, when the adapter cannot carry a transformers class's names."""
    if names.kind == REMOTE_CODE_NAMES:
        log.info(
            "the adapter carries the module names of `tinygpt export`'s own code "
            "(model.blocks.N...), as no transformers class computes this model (%s)",
            names.reason,
        )


# ----------------------------------------------------------------------------------------------
# Names


def to_peft_tensors(state: dict[str, Tensor], names: ModuleNames) -> dict[str, Tensor]:
    """tinygpt's LoRA tensors (`blocks.0.attn.qkv.lora_A.weight`) as peft saves them for the
    exported model; a B of a fused module is split by the rows of its parts, its A repeated."""
    tensors: dict[str, Tensor] = {}
    for key, tensor in state.items():
        module, _, kind = key.rpartition(".lora_")  # kind: A.weight or B.weight
        target = names.of(module)
        if kind.startswith("B") and target.rows:
            parts = tensor.split(list(target.rows))  # (out_i, r) each
        else:
            parts = (tensor,) * len(target.names)
        for name, part in zip(target.names, parts, strict=True):
            # clone: safetensors refuses tensors that share memory (split views, repeated A)
            tensors[f"{PEFT_PREFIX}{name}.lora_{kind}"] = part.contiguous().clone()
    return tensors


def from_peft_tensors(
    tensors: dict[str, Tensor], names: ModuleNames, adapted: list[str]
) -> dict[str, Tensor]:
    """The inverse of `to_peft_tensors` for the modules `adapted` (tinygpt's names)."""
    tensors = {key.removeprefix(PEFT_PREFIX): tensor for key, tensor in tensors.items()}
    state: dict[str, Tensor] = {}
    for module in adapted:
        target = names.of(module)
        for kind in ("A.weight", "B.weight"):
            keys = [f"{name}.lora_{kind}" for name in target.names]
            missing = [key for key in keys if key not in tensors]
            if missing:
                raise CheckpointError(f"the adapter has no tensor {missing[0]}")
            parts = [tensors[key] for key in keys]
            joined = torch.cat(parts) if kind.startswith("B") else parts[0]  # A: one, repeated
            state[f"{module}.lora_{kind}"] = joined
    return state


def peft_config(settings: LoraSettings, adapted: list[str], names: ModuleNames) -> dict[str, Any]:
    """adapter_config.json as peft writes it: its own LoraConfig, so every field is one that
    this peft version reads."""
    target_modules = [name for module in adapted for name in names.of(module).names]
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=target_modules,  # full names: `c_proj` alone would take the MLP's too
        bias="none",
        fan_in_fan_out=names.kind == "gpt2",  # GPT-2's Conv1D stores W as (in, out)
        task_type="CAUSAL_LM" if names.kind != TINYGPT_NAMES else None,
        inference_mode=True,  # as PeftModel.save_pretrained writes it
    )
    document = config.to_dict()
    document["target_modules"] = target_modules  # a list in model order, not a set
    return {key: sorted(v) if isinstance(v, set) else v for key, v in document.items()}


# ----------------------------------------------------------------------------------------------
# Files


def save_adapter(
    run_dir: Path,
    model: nn.Module,
    settings: LoraSettings,
    adapted: list[str],
    names: ModuleNames,
    info: dict[str, Any],
) -> Path:
    """RUN_DIR/adapter/ in peft's layout, with tinygpt's record beside it. Each file is replaced
    atomically, the record last; its sha256 of the other two lets a reader refuse a set caught
    between the renames."""
    directory = run_dir / ADAPTER_DIR
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        ADAPTER_WEIGHTS: save_safetensors(
            to_peft_tensors(adapter_state_dict(model), names), metadata={"format": "pt"}
        ),
        PEFT_CONFIG: _json_bytes(peft_config(settings, adapted, names)),
    }
    record = {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "module_names": names.kind,
        "peft_version": peft_version,
        "r": settings.r,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "targets": list(settings.targets),
        "target_modules": adapted,  # tinygpt's names
        "files": {
            name: {"bytes": len(data), "sha256": sha256_of(data)} for name, data in files.items()
        },
        **info,
    }
    for name, data in files.items():
        write_bytes_atomic(directory / name, data)
    write_bytes_atomic(directory / RECORD, _json_bytes(record))
    return directory


def read_adapter(directory: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(adapter.json, the tensors as saved), checked against each other."""
    path = directory / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{directory} is not a tinygpt adapter (no {RECORD})") from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is unreadable ({err})") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise CheckpointError(f"{path} is not a tinygpt adapter")
    # version 1 recorded the weights alone, under "weights"
    files = record.get("files") or {ADAPTER_WEIGHTS: record.get("weights") or {}}
    contents = {name: _read_checked(directory, name, expected) for name, expected in files.items()}
    try:
        return record, load_safetensors(contents[ADAPTER_WEIGHTS])
    except (SafetensorError, ValueError, KeyError) as err:
        raise CheckpointError(f"{directory / ADAPTER_WEIGHTS} cannot be read: {err}") from None


def _read_checked(directory: Path, name: str, expected: Any) -> bytes:
    try:
        data = (directory / name).read_bytes()
    except OSError as err:
        raise CheckpointError(f"{directory / name} is unreadable ({err.strerror})") from None
    if not isinstance(expected, dict) or sha256_of(data) != expected.get("sha256"):
        raise CheckpointError(
            f"{directory / name} does not match the sha256 in {RECORD}; it was replaced or "
            "corrupted"
        )
    return data


def apply_adapter(model: GPT, directory: Path) -> LoraSettings:
    """Wrap `model` (the base run's) with the adapter saved in `directory`, in place."""
    record, tensors = read_adapter(directory)
    settings = LoraSettings(
        r=int(record["r"]),
        alpha=float(record["lora_alpha"]),
        targets=tuple(record["target_modules"]),
        dropout=float(record["lora_dropout"]),
    )
    saved_kind = record.get("module_names", TINYGPT_NAMES)  # version 1: tinygpt's names
    names = (
        ModuleNames(saved_kind) if saved_kind == TINYGPT_NAMES else module_names_for(model.config)
    )
    if saved_kind != names.kind:
        raise CheckpointError(
            f"{directory} holds an adapter in {saved_kind} module names, but this model's are "
            f"{names.kind}; use the base run it was trained on"
        )
    adapted = add_lora(model, settings)
    load_adapter_state_dict(model, from_peft_tensors(tensors, names, adapted))
    return settings


def _json_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
