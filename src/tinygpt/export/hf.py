"""Runs as Hugging Face `transformers` model directories: `tinygpt export --format hf`.

Two of tinygpt's architectures are transformers classes with the same arithmetic, GPT-2's and
Llama's blocks (`hf_blocks.py`); the tensors and config.json are mapped in `hf_layout.py`, the
tokenizer in `hf_tokenizer.py`. The reverse, a transformers directory as a run, is
`hf_import.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import save as save_safetensors

from tinygpt.atomic_files import publish_directory, write_synced
from tinygpt.config import RunConfig
from tinygpt.config_parsing import config_from_dict
from tinygpt.directories import check_output_dir
from tinygpt.errors import ConfigError
from tinygpt.export.hf_blocks import HF_CLASSES, hf_architecture
from tinygpt.export.hf_layout import (
    CONFIG_FILE,
    GENERATION_FILE,
    WEIGHTS_FILE,
    hf_config,
    to_hf_tensors,
)
from tinygpt.export.hf_tokenizer import export_tokenizer
from tinygpt.run.directory import read_run_config_dict
from tinygpt.run.load import load_model_from_run


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    model_class: str  # GPT2LMHeadModel or LlamaForCausalLM
    tokenizer_kind: str


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


def _write_directory(out: Path, files: dict[str, bytes]) -> None:
    """Every file in a hidden sibling folder, then renamed to `out`: a kill leaves no
    half-exported model."""
    check_output_dir(out)

    def write(folder: Path) -> None:
        for name, data in files.items():
            write_synced(folder / name, data)

    publish_directory(out, write)


def _json_bytes(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
