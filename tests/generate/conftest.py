"""The small untrained model and the character tokenizer the generation tests decode with."""

import pytest
import torch

from tinygpt.config import ModelConfig
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.char import CharTokenizer


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=40, block_size=32, n_layer=2, n_head=4, n_embd=32, dropout=0)
    return GPT(config).eval()


@pytest.fixture(scope="module")
def tokenizer() -> CharTokenizer:
    return CharTokenizer.train("abcdefghijklmnopqrstuvwxyz .,!?\n")
