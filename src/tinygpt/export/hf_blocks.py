"""The two transformers blocks tinygpt maps to, and which of them computes a ModelConfig.

- the GPT-2 block (learned positions, LayerNorm, GELU MLP, multi-head attention) is
  `GPT2LMHeadModel` (`hf_gpt2.py`);
- the Llama block (RoPE, RMSNorm, SwiGLU, no biases, grouped-query attention optional) is
  `LlamaForCausalLM` (`hf_llama.py`).

Both scale attention scores by 1/sqrt(head_dim). Everything else (hybrid attention, adaptive
softmax, GEGLU, mixtures such as learned positions with RMSNorm; QK-norm, logit
soft-capping and the embedding mix, which neither block computes) has no transformers class: it
is exported with its own code (`hf_custom.py`), and refused by a GGUF export and by an import of
a transformers model. `zero_init_proj` only initialises, so it exports either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tinygpt.config import ModelConfig

Architecture = Literal["gpt2", "llama"]
HF_CLASSES: dict[Architecture, str] = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
BLOCK_NAMES: dict[Architecture, str] = {"gpt2": "GPT-2", "llama": "Llama"}
# the ModelConfig fields that pick each block; attention=global and output=softmax for both
BLOCKS: dict[Architecture, dict[str, Any]] = {
    "gpt2": {"position": "learned", "norm": "layernorm", "ffn": "mlp"},
    "llama": {"position": "rope", "norm": "rmsnorm", "ffn": "swiglu", "bias": False},
}
# model ideas neither block computes, with the value that turns each off (zero_init_proj is only
# an initialisation, so it exports)
NOT_IN_EITHER_BLOCK: dict[str, Any] = {
    "qk_norm": False,
    "logit_softcap": 0.0,
    "embed_mix": False,
}
SUPPORTED = (
    "the GPT-2 block (position=learned, norm=layernorm, ffn=mlp, no n_kv_head) as GPT2LMHeadModel "
    "and the Llama block (position=rope, norm=rmsnorm, ffn=swiglu, bias=false) as "
    "LlamaForCausalLM, both with attention=global and output=softmax"
)


@dataclass(frozen=True)
class TensorPlacement:
    """One of our tensors and the transformers tensors that hold it."""

    ours: str
    theirs: tuple[str, ...]  # several: our fused matrix is theirs stacked by rows
    rows: tuple[int, ...] = ()  # with several: the rows of each
    transpose: bool = False  # GPT-2's Conv1D stores (in, out), nn.Linear (out, in)
    is_bias: bool = False  # GPT-2 always has biases; ours may have none


def hf_export_problems(config: ModelConfig) -> tuple[Architecture, list[str]]:
    """The closest transformers architecture, and what of `config` it cannot compute (nothing:
    the model exports)."""
    problems = []
    if config.attention != "global":
        problems.append(f"attention={config.attention} has no transformers equivalent")
    if config.output != "softmax":
        problems.append(f"output={config.output} (adaptive softmax) has no transformers equivalent")
    for name, off in NOT_IN_EITHER_BLOCK.items():
        value = getattr(config, name)
        if value != off:
            problems.append(f"{name}={_show(value)} is in neither the GPT-2 nor the Llama block")
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
