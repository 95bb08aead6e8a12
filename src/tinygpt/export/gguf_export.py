"""Runs as GGUF files, which llama.cpp and Ollama run: `tinygpt export --format gguf`.

Written with `gguf`, llama.cpp's own Python writer (an optional extra: `tinygpt[gguf]`), in the
conventions of llama.cpp's convert_hf_to_gguf.py: the model's tensors and hyperparameters in
`gguf_layout.py`, the tokenizer in `gguf_tokenizer.py`. `--quant` stores each matrix as
- f32: as trained (bit for bit from a float32 run);
- f16: half the size, each value rounded to 11 significant bits (the converter's default);
- q8_0: about a quarter of the size, blocks of 32 values as 8-bit integers with one f16 scale
  each; a matrix whose rows are not whole blocks stays f16, as the converter leaves it.
Vectors (norms, biases) and GPT-2's position table stay f32 at every setting, as the converter
keeps them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gguf

from tinygpt.atomic_files import fsync_directory, temporary_name_pattern
from tinygpt.config_parsing import config_from_dict
from tinygpt.errors import ConfigError
from tinygpt.export.gguf_layout import (
    GGUF_ARCHITECTURES,
    add_hyperparameters,
    export_notes,
    gguf_architecture,
    gguf_tensors,
)
from tinygpt.export.gguf_tokenizer import add_vocabulary, check_tokenizer_kind, gguf_vocabulary
from tinygpt.export.hf_blocks import Architecture
from tinygpt.model.gpt import GPT
from tinygpt.run.directory import read_run_config_dict
from tinygpt.run.load import load_model_from_run
from tinygpt.tokenizers.base import Tokenizer

logger = logging.getLogger(__name__)

Quant = Literal["f32", "f16", "q8_0"]
QUANTS: tuple[Quant, ...] = ("f32", "f16", "q8_0")
FILE_TYPES: dict[Quant, gguf.LlamaFileType] = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
MATRIX_TYPES: dict[Quant, gguf.GGMLQuantizationType] = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
Q8_0_BLOCK = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]  # values per block: 32
# tensors the converter keeps in f32 whatever the setting (read by row, not multiplied)
ALWAYS_F32 = {gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.POS_EMBD] + ".weight"}


@dataclass(frozen=True)
class GGUFExportResult:
    path: Path
    architecture: Architecture  # llama.cpp's names too: gpt2 or llama
    quant: Quant
    tokenizer_kind: str
    size_bytes: int


def export_gguf(
    run_dir: Path, out: Path, quant: Quant, checkpoint: str = "best"
) -> GGUFExportResult:
    """Write the run's `checkpoint` as the new GGUF file `out`. What llama.cpp cannot run is
    refused before anything is written, and all but a unigram SentencePiece model from the
    run's config.json, before the checkpoint is read."""
    if quant not in QUANTS:
        raise ConfigError(f"--quant {quant} is not one of {', '.join(QUANTS)}")
    saved = config_from_dict(read_run_config_dict(run_dir))
    try:
        architecture = gguf_architecture(saved.model)
        check_tokenizer_kind(saved.data.tokenizer)
    except ConfigError as err:
        raise ConfigError(f"{run_dir}: {err}") from None
    check_new_file(out)
    model, tokenizer, config = load_model_from_run(run_dir, checkpoint)
    for note in export_notes(config.model, architecture):
        logger.warning(note)
    with _quiet_gguf_logs():
        writer = _filled_writer(run_dir.name, model, tokenizer, architecture, quant)
        _write_new_file(out, writer)
    return GGUFExportResult(out, architecture, quant, tokenizer.kind, out.stat().st_size)


def check_new_file(out: Path) -> None:
    """Never replace what is there: a GGUF file is a single file, and may be the user's."""
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the path of a new .gguf file")
    if out.exists() or out.is_symlink():
        raise ConfigError(f"--out {out} already exists; give a new file name or remove it first")


def storage_type(name: str, shape: tuple[int, ...], quant: Quant) -> gguf.GGMLQuantizationType:
    """How the tensor `name` is stored at `quant` (see the module docstring)."""
    if len(shape) == 1 or name in ALWAYS_F32:
        return gguf.GGMLQuantizationType.F32
    if quant == "q8_0" and shape[-1] % Q8_0_BLOCK:
        return gguf.GGMLQuantizationType.F16
    return MATRIX_TYPES[quant]


def _filled_writer(
    name: str, model: GPT, tokenizer: Tokenizer, architecture: Architecture, quant: Quant
) -> gguf.GGUFWriter:
    """A GGUFWriter holding the model's metadata, vocabulary and tensors, not yet written."""
    vocabulary = gguf_vocabulary(tokenizer, model.config.vocab_size)
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[GGUF_ARCHITECTURES[architecture]])
    writer.add_name(name)
    add_hyperparameters(writer, model.config, architecture)
    writer.add_file_type(FILE_TYPES[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_vocabulary(writer, vocabulary)
    for tensor_name, tensor in gguf_tensors(model, architecture).items():
        storage = storage_type(tensor_name, tuple(tensor.shape), quant)
        data = gguf.quants.quantize(tensor.detach().float().cpu().numpy(), storage)
        writer.add_tensor(tensor_name, data, raw_dtype=storage)
    return writer


def _write_new_file(out: Path, writer: gguf.GGUFWriter) -> None:
    """The whole file in a hidden temporary beside `out`, synced, then linked as `out`: a kill
    leaves no half-written model, and unlike a rename, a link never replaces a file that
    appeared at `out` meanwhile."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_file_beside(out) as temporary:
        try:
            writer.write_header_to_file(temporary)
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(temporary, out)
        except FileExistsError:
            raise ConfigError(
                f"--out {out} appeared while exporting; it was left as it is"
            ) from None
        except OSError:  # a file system without hard links
            check_new_file(out)
            os.replace(temporary, out)
        fsync_directory(out.parent)


@contextlib.contextmanager
def _temporary_file_beside(path: Path) -> Iterator[Path]:
    """An empty file named as tinygpt.atomic_files names its temporaries, removed at the end."""
    prefix = temporary_name_pattern(path.name).removesuffix("*")
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=prefix)
    os.close(descriptor)
    os.chmod(name, 0o644)  # mkstemp makes it owner-only
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_gguf_logs() -> Iterator[None]:
    """The writer logs its plans at INFO, which the CLI would print: keep to warnings."""
    gguf_logger = logging.getLogger("gguf")
    level = gguf_logger.level
    gguf_logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        gguf_logger.setLevel(level)
