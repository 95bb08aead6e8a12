"""Our models as llama.cpp's GGUF tensors and hyperparameters: the GPT-2 block as its `gpt2`
architecture, the Llama block as `llama` (`hf_blocks.py` says which block a config is).

The tensors are the ones `tinygpt export --format hf` writes (`hf_layout.py`), renamed by gguf's
TensorNameMap as llama.cpp's convert_hf_to_gguf.py renames them, with the converter's changes:

- gpt2: every matrix in nn.Linear's (out, in) layout, which the converter gets by transposing
  GPT-2's Conv1D; the output head is written even when tied (the converter writes token_embd
  again as output);
- llama: the rows of q and k permuted. Our RoPE (and transformers') rotates the channel pairs
  (i, i + D/2) of a head; llama.cpp's `llama` rotates adjacent pairs (2i, 2i + 1), so row
  i + j * D/2 moves to row 2i + j (the converter's LlamaModel.permute, which transformers'
  GGUF loader undoes). A tied head is left out: llama.cpp then reads token_embd.

llama.cpp's gpt2 computes GELU with the tanh approximation (`activation=gelu_tanh`); a run with
the exact GELU still exports, with a note, and its logits move a little (5e-4 at most in
`tests/export/test_gguf.py`, on logits of about 2).

transformers' GGUF loader (5.x) reads `gpt2.context_length` into `n_ctx`, which GPT2Config no
longer reads, and skips `gpt2.feed_forward_length`: it loads a gpt2 file only when given
`n_positions=block_size` (and `n_inner=ffn_hidden` where that is not 4 n_embd), and otherwise
fails on the shapes. llama.cpp reads both keys.
"""

from __future__ import annotations

import gguf
from torch import Tensor

from tinygpt.config import ModelConfig
from tinygpt.errors import ConfigError
from tinygpt.export.hf_blocks import Architecture, hf_export_problems
from tinygpt.export.hf_gpt2 import LAYER_NORM_EPS
from tinygpt.export.hf_layout import tensor_placements, to_hf_tensors
from tinygpt.export.hf_llama import RMS_NORM_EPS
from tinygpt.model.gpt import GPT

GGUF_ARCHITECTURES: dict[Architecture, gguf.MODEL_ARCH] = {
    "gpt2": gguf.MODEL_ARCH.GPT2,
    "llama": gguf.MODEL_ARCH.LLAMA,
}
SUPPORTED = (
    "the GPT-2 block (position=learned, norm=layernorm, ffn=mlp, activation=gelu or gelu_tanh, "
    "no n_kv_head) as llama.cpp's gpt2 and the Llama block (position=rope, norm=rmsnorm, "
    "ffn=swiglu, bias=false) as its llama, both with attention=global and output=softmax"
)
EXACT_GELU_NOTE = (
    "note: this run's MLP uses the exact (erf) GELU; llama.cpp's gpt2 computes the tanh "
    "approximation, so its logits differ slightly from tinygpt's (train with "
    "--activation gelu_tanh for an exact match)"
)


def gguf_architecture(config: ModelConfig) -> Architecture:
    """The llama.cpp architecture that computes what `config` does; a ConfigError naming every
    field it cannot compute. llama.cpp's gpt2 and llama are transformers' GPT2LMHeadModel and
    LlamaForCausalLM, less the GPT-2 activations other than GELU."""
    architecture, problems = hf_export_problems(config)
    if architecture == "gpt2" and config.activation == "relu2":
        problems.append("activation=relu2 is not in llama.cpp's gpt2, whose MLP is a GELU")
    if problems:
        raise ConfigError(
            "cannot export to GGUF (llama.cpp's gpt2 and llama compute what transformers' "
            f"GPT2LMHeadModel and LlamaForCausalLM do): {'; '.join(problems)}; supported: "
            f"{SUPPORTED}"
        )
    return architecture


def export_notes(config: ModelConfig, architecture: Architecture) -> list[str]:
    """What the user should know about an export that works but is not exact."""
    if architecture == "gpt2" and config.activation == "gelu":
        return [EXACT_GELU_NOTE]
    return []


def add_hyperparameters(
    writer: gguf.GGUFWriter, config: ModelConfig, architecture: Architecture
) -> None:
    """The `{arch}.*` keys llama.cpp builds the model from."""
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_feed_forward_length(config.ffn_width)
    writer.add_head_count(config.n_head)
    if architecture == "gpt2":
        writer.add_layer_norm_eps(LAYER_NORM_EPS)
        return
    writer.add_head_count_kv(config.kv_heads)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_vocab_size(config.vocab_size)


def gguf_tensors(model: GPT, architecture: Architecture) -> dict[str, Tensor]:
    """The model's weights under llama.cpp's names (`blk.0.attn_qkv.weight`) and layouts."""
    config = model.config
    tensors = _renamed_hf_tensors(model, architecture)
    if architecture == "gpt2":
        # the converter writes a tied head out as a copy of the embedding
        output, embedding = (
            tensor_name(gguf.MODEL_TENSOR.OUTPUT),
            tensor_name(gguf.MODEL_TENSOR.TOKEN_EMBD),
        )
        tensors.setdefault(output, tensors[embedding])
        return tensors
    for block in range(config.n_layer):
        for kind, heads in (
            (gguf.MODEL_TENSOR.ATTN_Q, config.n_head),
            (gguf.MODEL_TENSOR.ATTN_K, config.kv_heads),
        ):
            name = tensor_name(kind, block)
            tensors[name] = pair_adjacent_rope_channels(tensors[name], heads)
    return tensors


def _renamed_hf_tensors(model: GPT, architecture: Architecture) -> dict[str, Tensor]:
    """`export --format hf`'s tensors as llama.cpp's converter names them, GPT-2's Conv1D
    matrices transposed back to (out, in)."""
    conv1d = {
        name
        for placement in tensor_placements(model.config, architecture)
        if placement.transpose
        for name in placement.theirs
    }
    names = gguf.get_tensor_name_map(GGUF_ARCHITECTURES[architecture], model.config.n_layer)
    return {
        names.get_name(hf_name, try_suffixes=(".weight", ".bias")): (
            tensor.t() if hf_name in conv1d else tensor
        )
        for hf_name, tensor in to_hf_tensors(model, architecture).items()
    }


def tensor_name(kind: gguf.MODEL_TENSOR, block: int | None = None) -> str:
    return gguf.TENSOR_NAMES[kind].format(bid=block) + ".weight"


def pair_adjacent_rope_channels(weight: Tensor, heads: int) -> Tensor:
    """q or k rows reordered so that each head's rotated pairs (i, i + D/2) become (2i, 2i + 1)."""
    rows, C = weight.shape
    D = rows // heads
    halves = weight.reshape(heads, 2, D // 2, C)  # (heads, first/second half, D/2, C)
    return halves.transpose(1, 2).reshape(rows, C)  # row 2i + j of a head: half j, channel i
