"""transformers' model class of a tinygpt model: `TinyGPTForCausalLM`, written beside an
exported model of an architecture transformers has no class for (hybrid attention, adaptive
softmax, GEGLU, mixed blocks, the speedrun ideas), so that

    AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)

loads it, and `generate()` runs it, without tinygpt installed. It wraps tinygpt's own GPT (the
export ships a copy of its modules): the arithmetic is the very code the run trained with.

What it does not do: a KV cache (each step recomputes the window; these models are small) and
padded batches (tinygpt's GPT has no attention mask: generate one prompt at a time, or
prompts of one length).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from tinygpt.config import ModelConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.rope import RotaryEmbedding

from .configuration_tinygpt import TinyGPTConfig

IGNORE_INDEX = -100  # transformers' label for "no loss here"


class TinyGPTForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = TinyGPTConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    def __init__(self, config: TinyGPTConfig) -> None:
        super().__init__(config)
        self.model = GPT(ModelConfig(**config.tinygpt))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: torch.nn.Module) -> None:
        """GPT initialised itself, and loading sets every saved tensor. What is not saved is
        RoPE's cos/sin table (derived from the config): transformers builds the model on the
        meta device and leaves such buffers empty, then calls this to fill them."""
        if isinstance(module, RotaryEmbedding):
            positions, half = module.cos.shape  # (T_max, D/2)
            fresh = RotaryEmbedding(2 * half, positions, self.model.config.rope_theta)
            module.cos.copy_(fresh.cos)
            module.sin.copy_(fresh.sin)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.wte

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        **_: Any,
    ) -> CausalLMOutput:
        """Logits (B, T, V) of the last block_size tokens (tinygpt's sliding context: a longer
        sequence is cut to its end, as `tinygpt sample` cuts it). With adaptive softmax the
        logits are log-probabilities, which softmax and sampling treat exactly like logits."""
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError(
                "this tinygpt model has no attention mask: give prompts without padding "
                "(one at a time, or all of one length)"
            )
        window = input_ids[:, -self.model.config.block_size :]  # (B, T)
        logits = self.model(window)  # (B, T, V)
        loss = None
        if labels is not None:
            targets = labels[:, -window.size(1) :][:, 1:]  # (B, T - 1)
            predicted = logits[:, :-1].reshape(-1, logits.size(-1)).float()
            loss = F.cross_entropy(predicted, targets.reshape(-1), ignore_index=IGNORE_INDEX)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, **_: Any
    ) -> dict[str, Any]:
        """Every step sees the whole sequence: there is no cache to continue from."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}
