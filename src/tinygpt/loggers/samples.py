"""The text sample a logger shows at each evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinygpt.generate.engine import GenerationSettings, generate_batch
from tinygpt.run.directory import run_tokenizer_path
from tinygpt.tokenizers.base import Tokenizer, load_tokenizer

if TYPE_CHECKING:
    from tinygpt.train.loop import Trainer

SAMPLE_TOKENS = 200  # at most; a run's sample.max_new_tokens may be fewer


class EvaluationSampler:
    """Continues the run's sample prompt from its sample seed, so that the samples of one run
    differ only by the weights. Generation draws from its own generator: the training stream's
    RNG is untouched, and a resumed run stays exact."""

    def __init__(self, trainer: Trainer) -> None:
        self.tokenizer: Tokenizer = load_tokenizer(run_tokenizer_path(trainer.require_run_dir()))
        sample = trainer.config.sample
        self.prompt = sample.prompt
        self.settings = GenerationSettings.from_sample(
            sample, max_new_tokens=min(sample.max_new_tokens, SAMPLE_TOKENS), precision="float32"
        )

    def draw(self, trainer: Trainer) -> str | None:
        """The sample, or None where the model is in shards (FSDP) and no rank holds it."""
        if trainer.context.is_distributed and trainer.context.mode == "fsdp":
            return None
        completion = generate_batch(trainer.model, self.tokenizer, [self.prompt], self.settings)
        return self.prompt + completion[0].text
