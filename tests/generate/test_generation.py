"""One generation: its penalties look at what it generated itself."""

import torch

from tinygpt.generate.engine import GenerationSettings
from tinygpt.generate.generation import Generation


def test_a_generation_applies_openai_penalties_to_its_own_tokens_only(tokenizer):
    settings = GenerationSettings(5, presence_penalty=1.0, frequency_penalty=0.5)
    generation = Generation(tokenizer, [1, 1, 1], settings)
    for token in (2, 2, 3):
        generation.push(token)
    seen = torch.tensor([[1, 1, 1, 2, 2, 3]])
    out = generation.adjust(torch.zeros(1, 6), seen)
    # token 1 is only in the prompt: not penalised; 2 came twice, 3 once
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, -2.0, -1.5, 0.0, 0.0]]))
