"""A Hugging Face `transformers` model directory as a tinygpt run: `tinygpt import-hf`.

`GPT2LMHeadModel` and `LlamaForCausalLM` with safetensors weights import (`hf_blocks.py`), and so
does tinygpt's own export of any other model (`hf_custom.py`); the run's `best` and `last`
checkpoint is step 0, and its data source records where it came from, not text to train on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors_file
from torch import Tensor

from tinygpt.config import DataConfig, RunConfig
from tinygpt.data.sources import imported_source
from tinygpt.errors import CheckpointError
from tinygpt.export.hf_blocks import HF_CLASSES
from tinygpt.export.hf_custom import (
    MODEL_CLASS,
    MODEL_TYPE,
    custom_model_config,
    custom_model_state,
)
from tinygpt.export.hf_layout import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    WEIGHTS_INDEX,
    from_hf_tensors,
    hf_model_type,
    model_config_from_hf,
)
from tinygpt.export.hf_tokenizer import import_tokenizer
from tinygpt.model.gpt import GPT
from tinygpt.run.checkpoint import save_checkpoint
from tinygpt.run.directory import check_new_run_dir, create_run_dir, read_json_object
from tinygpt.run.load import check_config_matches_weights, load_weights_into
from tinygpt.tokenizers.base import Tokenizer


@dataclass(frozen=True)
class ImportResult:
    run_dir: Path
    model_class: str
    tokenizer_kind: str


@dataclass(frozen=True)
class HFModel:
    """A transformers model directory read into tinygpt's terms: the config (the model's
    shape, and data fields that name its tokenizer), the GPT with its weights, the tokenizer."""

    source: Path
    config: RunConfig
    model: GPT
    tokenizer: Tokenizer
    model_class: str


def import_hf(hf_dir: Path, run_dir: Path) -> ImportResult:
    """Turn a GPT2LMHeadModel or LlamaForCausalLM directory (config.json, safetensors weights,
    tokenizer) into a tinygpt run whose `best` and `last` checkpoint is step 0."""
    check_new_run_dir(run_dir)
    read = read_hf_model(hf_dir)
    create_run_dir(
        run_dir,
        read.config.to_json(),
        read.tokenizer.to_json(),
        {"imported_from": str(read.source), "model_class": read.model_class},
    )
    summary = {"val_loss": None, "imported_from": str(read.source)}
    save_checkpoint(run_dir, 0, read.model, {}, summary, True)
    return ImportResult(run_dir, read.model_class, read.tokenizer.kind)


def read_hf_model(hf_dir: Path) -> HFModel:
    """Read a GPT2LMHeadModel or LlamaForCausalLM directory (config.json, safetensors weights,
    tokenizer); whatever tinygpt cannot run exactly is refused in one line."""
    if not hf_dir.is_dir():
        raise CheckpointError(f"{hf_dir} is not a directory; give a Hugging Face model directory")
    document = _read_config(hf_dir)
    if document.get("model_type") == MODEL_TYPE:  # tinygpt's own export, with its own code
        model_config = custom_model_config(document, hf_dir)
        state = custom_model_state(_read_tensors(hf_dir))
        model_class = MODEL_CLASS
    else:
        hf_model_type(document, hf_dir)  # refuse a foreign model before reading its weights
        tensors = _read_tensors(hf_dir)
        model_config, architecture = model_config_from_hf(document, tensors, hf_dir)
        state = from_hf_tensors(tensors, model_config, architecture, hf_dir)
        model_class = HF_CLASSES[architecture]
    imported = import_tokenizer(hf_dir)
    tokenizer = imported.tokenizer
    if tokenizer.vocab_size > model_config.vocab_size:
        raise CheckpointError(
            f"{hf_dir}'s tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{model_config.vocab_size}; they do not belong together"
        )
    check_config_matches_weights(model_config, state, hf_dir)
    model = GPT(model_config)
    load_weights_into(model, state)
    source = hf_dir.expanduser().resolve()
    # no training data: the folder is not text, and eval of it must ask for --data instead
    data = DataConfig(source=imported_source(str(source)), **imported.data_fields)
    config = RunConfig(model=model_config, data=data)
    return HFModel(source, config, model.eval(), tokenizer, model_class)


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
