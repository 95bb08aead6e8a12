"""Models transformers has no class for, exported with their own code (`trust_remote_code`).

Hybrid attention, adaptive softmax, GEGLU, mixed blocks and the speedrun ideas are not GPT-2
or Llama (`hf_blocks.py`). They are shared the way custom architectures are shared on the Hub:
config.json names its classes in `auto_map`, and the directory holds the Python that defines
them, `configuration_tinygpt.py` and `modeling_tinygpt.py` (tinygpt.export.remote_code). The
model class wraps tinygpt's own GPT, so the directory also holds a copy of every tinygpt module
the model imports (`tinygpt.model.gpt` as `tinygpt_model_gpt.py`, ...), with each
`from tinygpt.X import` turned into `from .tinygpt_X import`: transformers copies a remote
module's relative imports with it, and nothing of tinygpt needs to be installed.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
from pathlib import Path
from typing import Any

from safetensors.torch import save as save_safetensors
from torch import Tensor

from tinygpt.config import ModelConfig
from tinygpt.errors import CheckpointError, TinyGPTError
from tinygpt.model.gpt import GPT

MODEL_TYPE = "tinygpt"  # config.json's model_type of an export with its own code
REMOTE_CODE_PACKAGE = "tinygpt.export.remote_code"
ENTRY_MODULES = ("configuration_tinygpt", "modeling_tinygpt")
MODEL_CLASS = "TinyGPTForCausalLM"
AUTO_MAP = {
    "AutoConfig": "configuration_tinygpt.TinyGPTConfig",
    "AutoModelForCausalLM": f"modeling_tinygpt.{MODEL_CLASS}",
}
PREFIX = "model."  # TinyGPTForCausalLM.model is the GPT
TINYGPT_IMPORT = re.compile(r"^(\s*)from tinygpt\.([\w.]+) import ", re.MULTILINE)


def custom_config(
    config: ModelConfig, special_ids: dict[str, int | None], dtype: str
) -> dict[str, Any]:
    """config.json: the classes to load (auto_map), and tinygpt's ModelConfig."""
    return {
        "architectures": [MODEL_CLASS],
        "model_type": MODEL_TYPE,
        "auto_map": AUTO_MAP,
        "tinygpt": dataclasses.asdict(config),
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.block_size,
        **special_ids,
        "use_cache": False,
        "dtype": dtype,
    }


def custom_weights(model: GPT) -> bytes:
    """Every tensor of the GPT under `model.`; a tied head is written as its own copy, since
    safetensors stores no tensor twice and loading fills both names of the one Parameter."""
    tensors: dict[str, Tensor] = {
        PREFIX + name: tensor.detach().clone().contiguous()
        for name, tensor in model.state_dict().items()
    }
    return save_safetensors(tensors, metadata={"format": "pt"})


def custom_model_config(document: dict[str, Any], source: Path) -> ModelConfig:
    """The ModelConfig an export with its own code keeps under `tinygpt` (`import-hf`)."""
    fields = document.get("tinygpt")
    if not isinstance(fields, dict):
        raise CheckpointError(f"{source} says model_type {MODEL_TYPE} but has no tinygpt config")
    try:
        return ModelConfig(**fields)
    except (TypeError, TinyGPTError) as err:
        raise CheckpointError(f"{source}'s tinygpt config cannot be read: {err}") from None


def custom_model_state(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The GPT's own tensor names, without the wrapper's `model.`."""
    return {name.removeprefix(PREFIX): tensor for name, tensor in tensors.items()}


def remote_code_files() -> dict[str, bytes]:
    """configuration_tinygpt.py, modeling_tinygpt.py and the tinygpt modules they import
    (transitively), with every tinygpt import made relative to the directory."""
    files: dict[str, bytes] = {}
    pending = [f"{REMOTE_CODE_PACKAGE}.{name}" for name in ENTRY_MODULES]
    while pending:
        module = pending.pop()
        name = _file_name(module)
        if name in files:
            continue
        source = _module_source(module)
        pending += _tinygpt_imports(source)
        files[name] = TINYGPT_IMPORT.sub(_relative_import, source).encode("utf-8")
    return files


def _file_name(module: str) -> str:
    """`tinygpt.model.gpt` -> tinygpt_model_gpt.py; the entry modules keep their names."""
    if module.startswith(REMOTE_CODE_PACKAGE + "."):
        return module.removeprefix(REMOTE_CODE_PACKAGE + ".") + ".py"
    return module.replace(".", "_") + ".py"


def _relative_import(match: re.Match[str]) -> str:
    indent, module = match.group(1), "tinygpt." + match.group(2)
    return f"{indent}from .{_file_name(module).removesuffix('.py')} import "


def _module_source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{module} has no source file"
    return Path(spec.origin).read_text(encoding="utf-8")


def _tinygpt_imports(source: str) -> list[str]:
    """The tinygpt modules `source` imports, and the entry modules it imports relatively."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom) or node.module is None:
            continue
        if node.level == 0 and node.module.startswith("tinygpt."):
            found.append(node.module)
        elif node.level == 1:
            found.append(f"{REMOTE_CODE_PACKAGE}.{node.module}")
    return found
