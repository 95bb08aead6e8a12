"""Autoregressive generation, streamed token by token, sliding the context past block_size."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from tinygpt.errors import DataError
from tinygpt.generate.sampling import sample_next_token
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.base import StreamDecoder, Tokenizer


@torch.no_grad()
def generate_tokens(
    model: GPT,
    prompt_ids: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time for a single prompt (1-D tensor of ids).

    With learned position embeddings the model cannot see more than block_size tokens, so once
    the text is longer only its last block_size tokens are fed back (seed 004's sliding window):
    the model forgets the oldest tokens but keeps writing. Each step recomputes the window; the
    KV cache that avoids this arrives with the generation engine.
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    block_size = model.config.block_size
    tokens = prompt_ids.view(1, -1).to(device)  # (1, T)
    for _ in range(max_new_tokens):
        context = tokens[:, -block_size:]  # (1, <= block_size)
        logits = model(context, last_token_only=True)[:, -1, :]  # (1, V)
        next_id = sample_next_token(logits, temperature, top_k, top_p, generator)  # (1, 1)
        tokens = torch.cat((tokens[:, -block_size:], next_id), dim=1)
        yield int(next_id.item())


def generate_text(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield decoded text pieces as they are generated (prompt not included). Pieces end on
    whole characters, even when a byte-level token stops in the middle of one."""
    if not prompt:
        raise DataError("the prompt is empty; give at least one character to continue")
    prompt_ids = torch.tensor(tokenizer.encode(prompt), dtype=torch.long)
    decoder = StreamDecoder(tokenizer)
    for token in generate_tokens(
        model, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed
    ):
        if piece := decoder.push(token):
            yield piece
    if rest := decoder.flush():
        yield rest
