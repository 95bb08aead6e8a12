"""Runs as Hugging Face `transformers` model directories, and such directories as runs.

Two of tinygpt's architectures are transformers classes with the same arithmetic:

- the GPT-2 block (learned positions, LayerNorm, GELU MLP, multi-head attention) is
  `GPT2LMHeadModel`. GPT-2's `Conv1D` stores a weight as (in, out), the transpose of `nn.Linear`;
  its `c_attn` fuses q, k, v in our order; it always has biases, so a run without them exports
  zeros. Our MLP's GELU is the exact (erf) one by default, `activation_function="gelu"`;
  `activation=gelu_tanh` is GPT-2's tanh approximation, `gelu_new` (or `gelu_pytorch_tanh`,
  the same function computed by one fused kernel).
- the Llama block (RoPE, RMSNorm, SwiGLU, no biases, grouped-query attention optional) is
  `LlamaForCausalLM`. Our RoPE rotates channel pairs (i, i + D/2), Llama's `rotate_half`
  convention, so q and k need no permutation; our fused qkv and [gate, up] matrices are split by
  rows.

Both scale attention scores by 1/sqrt(head_dim). Everything else (hybrid attention, adaptive
softmax, GEGLU, mixtures such as learned positions with RMSNorm) has no transformers class and is
refused, on export and on import. The exported config.json also keeps tinygpt's own ModelConfig
under "tinygpt", so that an import restores what transformers does not record (dropout, init,
biases that were off).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors_file
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from tinygpt.atomic_files import fsync_directory, write_synced
from tinygpt.config import DataConfig, ModelConfig, RunConfig, config_from_dict
from tinygpt.data.sources import imported_source
from tinygpt.directories import check_output_dir
from tinygpt.errors import CheckpointError, ConfigError
from tinygpt.export.hf_tokenizer import export_tokenizer, import_tokenizer
from tinygpt.model.gpt import GPT
from tinygpt.model.norm import RMSNorm
from tinygpt.train.checkpoint import (
    check_new_run_dir,
    create_run_dir,
    load_model_from_run,
    load_weights_into,
    read_json_object,
    read_run_config_dict,
    save_checkpoint,
)

Architecture = Literal["gpt2", "llama"]
HF_CLASSES: dict[Architecture, str] = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
BLOCK_NAMES: dict[Architecture, str] = {"gpt2": "GPT-2", "llama": "Llama"}
# the ModelConfig fields that pick each block; attention=global and output=softmax for both
BLOCKS: dict[Architecture, dict[str, Any]] = {
    "gpt2": {"position": "learned", "norm": "layernorm", "ffn": "mlp"},
    "llama": {"position": "rope", "norm": "rmsnorm", "ffn": "swiglu", "bias": False},
}
SUPPORTED = (
    "the GPT-2 block (position=learned, norm=layernorm, ffn=mlp, no n_kv_head) as GPT2LMHeadModel "
    "and the Llama block (position=rope, norm=rmsnorm, ffn=swiglu, bias=false) as "
    "LlamaForCausalLM, both with attention=global and output=softmax"
)
LAYER_NORM_EPS = nn.LayerNorm(1).eps  # what make_norm builds
RMS_NORM_EPS = RMSNorm(1).eps
CONFIG_FILE = "config.json"
GENERATION_FILE = "generation_config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
# ModelConfig.activation as GPT-2's activation_function, and back (several names, one function)
GPT2_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new"}
FROM_GPT2_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
HINT_KEY = "tinygpt"  # our ModelConfig inside the exported config.json
# what an import may take from that hint: fields transformers does not record, or records
# another way; accepted only where the arithmetic stays the same
HINT_FIELDS = ("dropout", "init", "n_kv_head", "ffn_hidden", "bias")
# buffers some transformers versions save beside the weights: a causal mask, RoPE frequencies
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    model_class: str  # GPT2LMHeadModel or LlamaForCausalLM
    tokenizer_kind: str


@dataclass(frozen=True)
class ImportResult:
    run_dir: Path
    model_class: str
    tokenizer_kind: str


# ----------------------------------------------------------------------------------------------
# Which transformers class


def hf_architecture(config: ModelConfig) -> Architecture:
    """The transformers architecture that computes what `config` does; a ConfigError naming
    every field that has none."""
    architecture, problems = hf_export_problems(config)
    if problems:
        raise ConfigError(f"{refusal(problems)}; supported: {SUPPORTED}")
    return architecture


def refusal(problems: list[str]) -> str:
    return f"cannot export to Hugging Face: {'; '.join(problems)}"


def hf_export_problems(config: ModelConfig) -> tuple[Architecture, list[str]]:
    """The closest transformers architecture, and what of `config` it cannot compute (nothing:
    the model exports)."""
    problems = []
    if config.attention != "global":
        problems.append(f"attention={config.attention} has no transformers equivalent")
    if config.output != "softmax":
        problems.append(f"output={config.output} (adaptive softmax) has no transformers equivalent")
    architecture = min(BLOCKS, key=lambda name: len(_block_mismatches(config, name)))
    mismatches = _block_mismatches(config, architecture)
    if mismatches:
        verb = "does" if len(mismatches) == 1 else "do"
        problems.append(
            f"{', '.join(mismatches)} {verb} not fit the {BLOCK_NAMES[architecture]} block, "
            "the closest one"
        )
    return architecture, problems


def _block_mismatches(config: ModelConfig, architecture: Architecture) -> list[str]:
    wrong = [
        f"{name}={_show(getattr(config, name))}"
        for name, value in BLOCKS[architecture].items()
        if getattr(config, name) != value
    ]
    if architecture == "gpt2" and config.kv_heads != config.n_head:
        wrong.append(f"n_kv_head={config.n_kv_head}")  # GPT-2 has no grouped-query attention
    return wrong


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


# ----------------------------------------------------------------------------------------------
# Tensor names


@dataclass(frozen=True)
class _Tensor:
    """One of our tensors and the transformers tensors that hold it."""

    ours: str
    theirs: tuple[str, ...]  # several: our fused matrix is theirs stacked by rows
    rows: tuple[int, ...] = ()  # with several: the rows of each
    transpose: bool = False  # GPT-2's Conv1D stores (in, out), nn.Linear (out, in)
    is_bias: bool = False  # GPT-2 always has biases; ours may have none


def _tensor_map(config: ModelConfig, architecture: Architecture) -> list[_Tensor]:
    return _gpt2_map(config) if architecture == "gpt2" else _llama_map(config)


def _gpt2_map(config: ModelConfig) -> list[_Tensor]:
    names = [
        _Tensor("wte.weight", ("transformer.wte.weight",)),
        _Tensor("wpe.weight", ("transformer.wpe.weight",)),
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
            names.append(_Tensor(f"{ours}{our_name}.weight", weight, transpose=is_conv1d))
            names.append(
                _Tensor(f"{ours}{our_name}.bias", (f"{theirs}{their_name}.bias",), is_bias=True)
            )
    names.append(_Tensor("ln_f.weight", ("transformer.ln_f.weight",)))
    names.append(_Tensor("ln_f.bias", ("transformer.ln_f.bias",), is_bias=True))
    if not config.tie_weights:
        names.append(_Tensor("lm_head.weight", ("lm_head.weight",)))
    return names


def _llama_map(config: ModelConfig) -> list[_Tensor]:
    kv_width = config.kv_heads * config.head_dim
    qkv_rows = (config.n_embd, kv_width, kv_width)
    names = [_Tensor("wte.weight", ("model.embed_tokens.weight",))]
    for index in range(config.n_layer):
        ours, theirs = f"blocks.{index}.", f"model.layers.{index}."
        attention = tuple(f"{theirs}self_attn.{p}_proj.weight" for p in "qkv")
        gate_up = (f"{theirs}mlp.gate_proj.weight", f"{theirs}mlp.up_proj.weight")
        names += [
            _Tensor(f"{ours}ln_1.weight", (f"{theirs}input_layernorm.weight",)),
            _Tensor(f"{ours}attn.qkv.weight", attention, qkv_rows),
            _Tensor(f"{ours}attn.proj.weight", (f"{theirs}self_attn.o_proj.weight",)),
            _Tensor(f"{ours}ln_2.weight", (f"{theirs}post_attention_layernorm.weight",)),
            _Tensor(f"{ours}mlp.fc.weight", gate_up, (config.ffn_width, config.ffn_width)),
            _Tensor(f"{ours}mlp.proj.weight", (f"{theirs}mlp.down_proj.weight",)),
        ]
    names.append(_Tensor("ln_f.weight", ("model.norm.weight",)))
    if not config.tie_weights:
        names.append(_Tensor("lm_head.weight", ("lm_head.weight",)))
    return names


def to_hf_tensors(model: GPT, architecture: Architecture) -> dict[str, Tensor]:
    """The model's weights under transformers' names and layouts."""
    state = model.state_dict()
    tensors: dict[str, Tensor] = {}
    for entry in _tensor_map(model.config, architecture):
        tensor = state.get(entry.ours)
        if tensor is None and entry.is_bias:  # bias=False: GPT-2's biases are zeros
            weight = state[entry.ours.removesuffix(".bias") + ".weight"]
            tensor = torch.zeros(weight.shape[0], dtype=weight.dtype)
        assert tensor is not None, entry.ours
        parts = tensor.split(list(entry.rows)) if entry.rows else (tensor,)
        for name, part in zip(entry.theirs, parts, strict=True):
            part = part.t() if entry.transpose else part
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
    for entry in _tensor_map(config, architecture):
        if entry.ours.endswith(".weight"):
            theirs = tuple(name.removesuffix(".weight") for name in entry.theirs)
            modules[entry.ours.removesuffix(".weight")] = HFModule(theirs, entry.rows)
    return modules


def from_hf_tensors(
    tensors: dict[str, Tensor], config: ModelConfig, architecture: Architecture, source: Path
) -> dict[str, Tensor]:
    """Our state dict from transformers' tensors (tied weights stored once, as checkpoints do)."""
    state: dict[str, Tensor] = {}
    used: set[str] = set()
    for entry in _tensor_map(config, architecture):
        missing = [name for name in entry.theirs if name not in tensors]
        if missing:
            raise CheckpointError(
                f"{source} has no tensor {missing[0]}; the weights do not match config.json"
            )
        used.update(entry.theirs)
        if entry.is_bias and not config.bias:
            continue  # zeros: chosen only when every bias is zero
        parts = [tensors[name].t() if entry.transpose else tensors[name] for name in entry.theirs]
        state[entry.ours] = torch.cat(parts) if len(parts) > 1 else parts[0].contiguous()
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
    if architecture == "gpt2":
        specific = {
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
    else:
        specific = {
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
    return {**common, **specific, HINT_KEY: {"model": dataclasses.asdict(config)}}


def model_config_from_hf(
    document: dict[str, Any], tensors: dict[str, Tensor], source: Path
) -> tuple[ModelConfig, Architecture]:
    """Our ModelConfig for a transformers config.json; a ConfigError for what we cannot run."""
    architecture = hf_model_type(document, source)
    try:
        fields = _gpt2_fields(document) if architecture == "gpt2" else _llama_fields(document)
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


def _gpt2_fields(document: dict[str, Any]) -> dict[str, Any]:
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


def _llama_fields(document: dict[str, Any]) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------------------------
# Export and import


def export_hf(run_dir: Path, out: Path, checkpoint: str = "best") -> ExportResult:
    """Write the run's `checkpoint` as a directory that transformers' AutoModelForCausalLM and
    AutoTokenizer load without tinygpt."""
    saved = config_from_dict(read_run_config_dict(run_dir))
    try:
        architecture = hf_architecture(saved.model)
    except ConfigError as err:
        raise ConfigError(f"{run_dir}: {err}") from None
    check_output_dir(out)
    model, tokenizer, config = load_model_from_run(run_dir, checkpoint)
    tokenizer_files = export_tokenizer(tokenizer, config.model.block_size)
    tensors = to_hf_tensors(model, architecture)
    dtype = str(model.wte.weight.dtype).removeprefix("torch.")
    files = {
        CONFIG_FILE: _json_bytes(
            hf_config(config.model, architecture, tokenizer_files.special_ids, dtype)
        ),
        GENERATION_FILE: _json_bytes(_generation_config(config, tokenizer_files.special_ids)),
        WEIGHTS_FILE: save_safetensors(tensors, metadata={"format": "pt"}),
        **tokenizer_files.files,
    }
    _write_directory(out, files)
    return ExportResult(out, HF_CLASSES[architecture], tokenizer.kind)


def _generation_config(config: RunConfig, special_ids: dict[str, int | None]) -> dict[str, Any]:
    """The run's sampling defaults, so `model.generate()` samples as `tinygpt sample` does."""
    sample = config.sample
    document: dict[str, Any] = {**special_ids, "max_new_tokens": sample.max_new_tokens}
    if sample.temperature > 0:
        document |= {"do_sample": True, "temperature": sample.temperature, "top_p": sample.top_p}
        document["top_k"] = sample.top_k
    return document


def import_hf(hf_dir: Path, run_dir: Path) -> ImportResult:
    """Turn a GPT2LMHeadModel or LlamaForCausalLM directory (config.json, safetensors weights,
    tokenizer) into a tinygpt run whose `best` and `last` checkpoint is step 0."""
    if not hf_dir.is_dir():
        raise CheckpointError(f"{hf_dir} is not a directory; give a Hugging Face model directory")
    check_new_run_dir(run_dir)
    document = _read_config(hf_dir)
    hf_model_type(document, hf_dir)  # refuse a foreign model before reading its weights
    tensors = _read_tensors(hf_dir)
    model_config, architecture = model_config_from_hf(document, tensors, hf_dir)
    imported = import_tokenizer(hf_dir)
    tokenizer = imported.tokenizer
    if tokenizer.vocab_size > model_config.vocab_size:
        raise CheckpointError(
            f"{hf_dir}'s tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{model_config.vocab_size}; they do not belong together"
        )
    model = GPT(model_config)
    load_weights_into(model, from_hf_tensors(tensors, model_config, architecture, hf_dir))
    source = str(hf_dir.expanduser().resolve())
    # no training data: the folder is not text, and eval of it must ask for --data instead
    data = DataConfig(source=imported_source(source), **imported.data_fields)
    config = RunConfig(model=model_config, data=data)
    create_run_dir(
        run_dir,
        config.to_json(),
        tokenizer.to_json(),
        {"imported_from": source, "model_class": HF_CLASSES[architecture]},
    )
    save_checkpoint(run_dir, 0, model, {}, {"val_loss": None, "imported_from": source}, True)
    return ImportResult(run_dir, HF_CLASSES[architecture], tokenizer.kind)


def _read_config(hf_dir: Path) -> dict[str, Any]:
    what = f"{hf_dir} is not a transformers model directory"
    return read_json_object(hf_dir / CONFIG_FILE, what)


def _read_tensors(hf_dir: Path) -> dict[str, Tensor]:
    """Every tensor of model.safetensors, or of the shards its index names."""
    if (hf_dir / WEIGHTS_FILE).is_file():
        paths = [hf_dir / WEIGHTS_FILE]
    elif (hf_dir / WEIGHTS_INDEX).is_file():
        index = read_json_object(hf_dir / WEIGHTS_INDEX, f"{hf_dir}'s weight index is unreadable")
        paths = [hf_dir / name for name in sorted(set(index.get("weight_map", {}).values()))]
    else:
        raise CheckpointError(
            f"{hf_dir} has no {WEIGHTS_FILE}; tinygpt reads safetensors weights only "
            "(save with save_pretrained(..., safe_serialization=True))"
        )
    tensors: dict[str, Tensor] = {}
    for path in paths:
        try:
            tensors |= load_safetensors_file(path)
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path} cannot be read: {err}") from None
    return {_canonical_name(name): tensor for name, tensor in tensors.items()}


def _canonical_name(name: str) -> str:
    """Weights saved from GPT2Model or LlamaModel lack the "transformer."/"model." prefix."""
    if name.startswith(("h.", "wte.", "wpe.", "ln_f.")):
        return f"transformer.{name}"
    if name.startswith(("layers.", "embed_tokens.", "norm.")):
        return f"model.{name}"
    return name


def _write_directory(out: Path, files: dict[str, bytes]) -> None:
    """Write every file into a temporary sibling, then rename it to `out`: a kill leaves no
    half-exported model."""
    check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    for name, data in files.items():
        write_synced(temporary / name, data)
    fsync_directory(temporary)
    if out.exists():
        out.rmdir()  # empty, checked above
    os.replace(temporary, out)
    fsync_directory(out.parent)


def _json_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
