"""transformers' config of a tinygpt model: `TinyGPTConfig`, written beside an exported
model of an architecture transformers has no class for (`tinygpt export --format hf`)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class TinyGPTConfig(PretrainedConfig):
    """tinygpt's ModelConfig under `tinygpt`, plus the few names transformers itself reads
    (vocabulary size, context length, width, depth, heads)."""

    model_type = "tinygpt"

    def __init__(self, tinygpt: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.tinygpt = dict(tinygpt or {})
        self.vocab_size = self.tinygpt.get("vocab_size", 0)
        self.max_position_embeddings = self.tinygpt.get("block_size", 0)
        self.hidden_size = self.tinygpt.get("n_embd", 0)
        self.num_hidden_layers = self.tinygpt.get("n_layer", 0)
        self.num_attention_heads = self.tinygpt.get("n_head", 0)
        # the head is saved as its own tensor, tied or not: nothing for transformers to tie
        kwargs["tie_word_embeddings"] = False
        super().__init__(**kwargs)
