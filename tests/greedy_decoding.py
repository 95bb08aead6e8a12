"""tinygpt's greedy token ids, decoded step by step through the KV cache: what the export tests
compare transformers' and llama.cpp's `generate` with."""

import torch

from tinygpt.generate.decode import BatchDecoder


def greedy(model: torch.nn.Module, prompt: list[int], steps: int) -> list[int]:
    """The `steps` ids argmax picks after `prompt`, end-of-text included (nothing stops it)."""
    decoder, ids = BatchDecoder(model, [prompt]), []
    for _ in range(steps):
        token = decoder.next_logits().argmax(-1)  # (1,)
        decoder.push(token)
        ids.append(int(token))
    return ids
