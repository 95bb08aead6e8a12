"""The text engine: seeds repeat, stops stop, bad settings are one-line errors, and rows that
join and leave a batch get what they get alone."""

import math

import pytest
import torch

from tinygpt.config import SampleConfig
from tinygpt.errors import ConfigError
from tinygpt.generate.decode import without_padding_ids
from tinygpt.generate.engine import (
    BatchedGeneration,
    GenerationSettings,
    generate_batch,
    stream_text,
)
from tinygpt.generate.fast_weights import DECODING_COPIES
from tinygpt.generate.generation import Generation

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_the_engine_decodes_with_the_precision_it_is_given(model, tokenizer, precision):
    settings = GenerationSettings(8, temperature=0, precision=precision)
    assert len(stream_text(model, tokenizer, "hello", settings).text()) == 8
    assert DECODING_COPIES[model.lm_head].weight.dtype == getattr(torch, precision)  # read


def test_same_seed_same_text_and_a_different_seed_differs(model, tokenizer):
    def text(seed):
        return stream_text(model, tokenizer, "hello", GenerationSettings(40, seed=seed)).text()

    assert text(7) == text(7)
    assert text(7) != text(8)


def test_a_stop_string_ends_the_text_and_is_not_emitted(model, tokenizer):
    full = stream_text(
        model, tokenizer, "hello", GenerationSettings(60, temperature=0, stop_at_end_of_text=False)
    ).text()
    stop = full[10:12]
    stream = stream_text(
        model, tokenizer, "hello", GenerationSettings(60, temperature=0, stop=(stop,))
    )
    pieces = list(stream)
    assert "".join(pieces) == full[: full.index(stop)]
    assert stream.finish_reason == "stop"
    long = stream_text(model, tokenizer, "hello", GenerationSettings(5, temperature=0))
    assert long.text() == full[:5] and long.finish_reason == "length"
    assert long.completion_tokens == 5 and long.prompt_tokens == 5


def test_batched_greedy_completions_equal_one_at_a_time(model, tokenizer):
    prompts = ["hello there", "a", "the quick brown"]
    greedy = GenerationSettings(20, temperature=0)
    batched = generate_batch(model, tokenizer, prompts, greedy)
    for prompt, completion in zip(prompts, batched, strict=True):
        alone = stream_text(model, tokenizer, prompt, greedy)
        assert completion.text == alone.text()
        assert completion.completion_tokens == alone.completion_tokens == 20


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="top_p"):
        GenerationSettings(top_p=0)
    with pytest.raises(ConfigError, match="min_new_tokens"):
        GenerationSettings(max_new_tokens=2, min_new_tokens=3)
    with pytest.raises(
        ConfigError, match="precision='bfloat16' is not one of auto, float16, float32"
    ):
        GenerationSettings(precision="bfloat16")
    with pytest.raises(ConfigError, match="presence_penalty=nan must be a finite number"):
        GenerationSettings(presence_penalty=float("nan"))
    assert math.isfinite(GenerationSettings().temperature)


def test_settings_from_a_runs_sample_config_take_each_field_and_the_changes_over_them():
    sample = SampleConfig(max_new_tokens=7, temperature=0.3, top_k=9, top_p=0.8, sample_seed=5)
    settings = GenerationSettings.from_sample(sample, precision="float32", stop=("x",))
    assert settings == GenerationSettings(
        max_new_tokens=7, temperature=0.3, top_k=9, top_p=0.8, seed=5, precision="float32",
        stop=("x",),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="min_new_tokens"):
        GenerationSettings.from_sample(sample, min_new_tokens=8)


# requests a server may batch together, each with its own settings; prompt + reply stay within
# the test model's 32-token context (past it, a batch slides all rows at once, not as alone)
MIXED = {
    "greedy": GenerationSettings(12, temperature=0, stop_at_end_of_text=False),
    "sampled": GenerationSettings(10, temperature=1.0, top_k=5, seed=11),
    "penalised": GenerationSettings(9, temperature=0, repetition_penalty=1.5, min_new_tokens=4),
    "stopped": GenerationSettings(20, temperature=0.7, top_p=0.9, seed=5, stop=("e",)),
    "openai": GenerationSettings(9, seed=3, presence_penalty=0.5, frequency_penalty=1.5),
    "logprobs": GenerationSettings(8, top_k=4, seed=4, logprobs=3),
}
PROMPTS = {
    "greedy": "hello",
    "sampled": "a cat",
    "penalised": "the the the",
    "stopped": "xyz",
    "openai": "aaa bbb",
    "logprobs": "hi there",
}


def alone(model, tokenizer, name):
    stream = stream_text(model, tokenizer, PROMPTS[name], MIXED[name])
    return stream.text(), stream.finish_reason, stream.completion_tokens


def test_rows_joining_and_leaving_a_batch_get_what_they_get_alone(model, tokenizer):
    batch = BatchedGeneration(model, tokenizer, "auto")
    rows: dict[str, Generation] = {}
    streamed = dict.fromkeys(MIXED, "")
    joins = {0: ["greedy"], 3: ["sampled", "penalised"], 5: ["stopped", "openai", "logprobs"]}
    step = widest = 0
    while step == 0 or batch.rows:
        for name in joins.get(step, []):
            rows[name] = Generation(tokenizer, tokenizer.encode(PROMPTS[name]), MIXED[name])
            batch.add(rows[name])
        widest = max(widest, len(batch.rows))
        for generation, piece in batch.step():
            streamed[next(n for n, g in rows.items() if g is generation)] += piece
        step += 1
    assert rows.keys() == MIXED.keys() and widest == 6  # all six shared steps
    for name, generation in rows.items():
        completion = generation.completion()
        assert streamed[name] == completion.text
        got = (completion.text, completion.finish_reason, completion.completion_tokens)
        assert got == alone(model, tokenizer, name), name
    assert len(rows["logprobs"].token_logprobs) == 8


def test_a_dropped_row_leaves_the_others_untouched(model, tokenizer):
    batch = BatchedGeneration(model, tokenizer, "auto")
    kept = Generation(tokenizer, tokenizer.encode(PROMPTS["sampled"]), MIXED["sampled"])
    gone = Generation(tokenizer, tokenizer.encode(PROMPTS["greedy"]), MIXED["greedy"])
    batch.add(gone)
    batch.add(kept)
    batch.step()
    batch.drop(gone)
    while batch.rows:
        batch.step()
    assert len(gone.generated) == 1 and not gone.finished
    text, reason, tokens = alone(model, tokenizer, "sampled")
    assert (kept.text, kept.finish_reason, len(kept.generated)) == (text, reason, tokens)


def run_alone(model, tokenizer, prompt_ids, settings) -> Generation:
    generation = Generation(tokenizer, prompt_ids, settings)
    batch = BatchedGeneration(model, tokenizer, settings.precision)
    batch.add(generation)
    while batch.rows:
        batch.step()
    return generation


def test_recorded_logprobs_are_the_models_own_not_the_samplers(model, tokenizer):
    prompt = tokenizer.encode("hello")
    # drawn at temperature 2 among the top 5; the log-probabilities are still the model's
    settings = GenerationSettings(10, temperature=2.0, top_k=5, seed=3, logprobs=3)
    generation = run_alone(model, tokenizer, prompt, settings)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + generation.generated]))[0, len(prompt) - 1 : -1]
    expected = without_padding_ids(logits, tokenizer.vocab_size).log_softmax(-1)  # (10, V)
    assert [record.token_id for record in generation.token_logprobs] == generation.generated
    for step, record in enumerate(generation.token_logprobs):
        assert record.logprob == pytest.approx(expected[step, record.token_id].item(), abs=1e-4)
        values, ids = expected[step].topk(3)
        assert [i for i, _ in record.top] == ids.tolist()
        assert [v for _, v in record.top] == pytest.approx(values.tolist(), abs=1e-4)


def test_a_prompt_longer_than_the_context_makes_no_other_row_slide(model, tokenizer):
    """A long prompt joins with its newest 3/4 context, as it starts alone; before, the batch
    re-encoded every row with the newest 3/4 context of the longest, cutting a row of 26."""
    short = GenerationSettings(10, temperature=0, logprobs=0)
    long = GenerationSettings(4, temperature=0, logprobs=0)
    short_prompt = tokenizer.encode("the quick brown fox jumps")[:20]
    long_prompt = tokenizer.encode("a long prompt, longer than the whole context of the model")
    assert len(long_prompt) > model.config.block_size
    batch = BatchedGeneration(model, tokenizer, "auto")
    rows = [Generation(tokenizer, short_prompt, short)]
    batch.add(rows[0])
    for step in range(10):
        if step == 6:  # the short row holds 26 tokens now
            rows.append(Generation(tokenizer, long_prompt, long))
            batch.add(rows[1])
        batch.step()
    for row, prompt, wanted in zip(rows, (short_prompt, long_prompt), (short, long), strict=True):
        single = run_alone(model, tokenizer, prompt, wanted)
        assert row.generated == single.generated
        assert [r.logprob for r in row.token_logprobs] == pytest.approx(
            [r.logprob for r in single.token_logprobs], abs=1e-4
        )


def test_seeds_are_whole_numbers_from_0_to_2_63(model, tokenizer):
    for seed in (2**63, -1):
        with pytest.raises(ConfigError, match=r"from 0 to 2\*\*63 - 1"):
            GenerationSettings(seed=seed)
    # the second prompt draws from seed + 1
    settings = GenerationSettings(6, seed=2**63 - 2)
    second = generate_batch(model, tokenizer, ["a", "a"], settings)[1]
    alone = stream_text(model, tokenizer, "a", GenerationSettings(6, seed=2**63 - 1)).text()
    assert second.text == alone
