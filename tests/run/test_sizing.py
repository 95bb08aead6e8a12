"""The sizes a run derives from its config and data, each computed once."""

import pytest

from tinygpt.config import RunConfig
from tinygpt.config_parsing import apply_overrides
from tinygpt.errors import ConfigError
from tinygpt.run.sizing import steps_for_epochs, tokens_per_step, with_vocab_size

CONFIG = apply_overrides(
    RunConfig(), {"batch_size": 4, "block_size": 16, "gradient_accumulation_steps": 3}
)


def test_tokens_per_step_counts_every_micro_batch():
    assert tokens_per_step(CONFIG) == 4 * 16 * 3


@pytest.mark.parametrize(("given", "expected"), [(0, 65), (65, 65), (128, 128)])
def test_the_vocabulary_takes_the_tokenizers_size_or_a_padded_one(given, expected):
    config = apply_overrides(CONFIG, {"vocab_size": given})
    assert with_vocab_size(config, 65).model.vocab_size == expected


def test_a_vocabulary_smaller_than_the_tokenizers_is_refused():
    config = apply_overrides(CONFIG, {"vocab_size": 64})
    with pytest.raises(ConfigError, match="vocab_size=64 is smaller than the tokenizer's 65"):
        with_vocab_size(config, 65)


def test_epochs_become_the_steps_that_read_the_split_that_many_times():
    config = apply_overrides(CONFIG, {"epochs": 2})
    assert steps_for_epochs(config, train_tokens=1000).max_iters == 11  # ceil(2000 / 192)
    assert steps_for_epochs(CONFIG, train_tokens=1000) == CONFIG.train  # no epochs: as given
