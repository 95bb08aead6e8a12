"""Runs as Hugging Face `transformers` model directories: `tinygpt export --format hf`.

Two of tinygpt's architectures are transformers classes with the same arithmetic, GPT-2's and
Llama's blocks (`hf_blocks.py`); the tensors and config.json are mapped in `hf_layout.py`, the
tokenizer in `hf_tokenizer.py`. Every other model is written with its own code, which
transformers loads with `trust_remote_code=True` (`hf_custom.py`). The reverse, a transformers
directory as a run, is `hf_import.py` (GPT-2 and Llama only).
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
from tinygpt.export.hf_blocks import HF_CLASSES, hf_export_problems
from tinygpt.export.hf_custom import MODEL_CLASS, custom_config, custom_weights, remote_code_files
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
    AutoTokenizer load without tinygpt: as GPT2LMHeadModel or LlamaForCausalLM where one of
    them computes the model, else with its own code (`hf_custom.py`, trust_remote_code)."""
    saved = config_from_dict(read_run_config_dict(run_dir))
    architecture, problems = hf_export_problems(saved.model)
    check_output_dir(out)
    model, tokenizer, config = load_model_from_run(run_dir, checkpoint)
    tokenizer_files = export_tokenizer(tokenizer, config.model.block_size)
    special_ids = tokenizer_files.special_ids
    dtype = str(model.wte.weight.dtype).removeprefix("torch.")
    generation = _generation_config(config, special_ids)
    if problems:  # no transformers class computes it: ship the code that does
        model_class = f"{MODEL_CLASS} (trust_remote_code)"
        files = {
            CONFIG_FILE: _json_bytes(custom_config(config.model, special_ids, dtype)),
            GENERATION_FILE: _json_bytes({**generation, "use_cache": False}),
            WEIGHTS_FILE: custom_weights(model),
            **remote_code_files(),
        }
    else:
        model_class = HF_CLASSES[architecture]
        files = {
            CONFIG_FILE: _json_bytes(hf_config(config.model, architecture, special_ids, dtype)),
            GENERATION_FILE: _json_bytes(generation),
            WEIGHTS_FILE: save_safetensors(
                to_hf_tensors(model, architecture), metadata={"format": "pt"}
            ),
        }
    _write_directory(out, {**files, **tokenizer_files.files})
    return ExportResult(out, model_class, tokenizer.kind)


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
