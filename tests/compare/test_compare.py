from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import tinygpt.train.loop as loop
from tinygpt.cli import main
from tinygpt.compare.budget import Budget, step_seconds_for
from tinygpt.compare.report import Comparison, ConfigResult, SeedResult, noise_verdict
from tinygpt.compare.runner import run_comparison
from tinygpt.compare.variants import load_variant, with_prepared_vocab
from tinygpt.errors import ConfigError
from tinygpt.eval.metrics import bits_per_unit
from tinygpt.model.gpt import GPT
from tinygpt.run.directory import read_run_config
from tinygpt.run.metrics import read_metrics

TINY = {
    "model.block_size": 16,
    "model.n_layer": 2,
    "model.n_head": 2,
    "model.n_embd": 32,
    "train.batch_size": 4,  # 64 tokens a step
    "train.eval_iters": 2,
    "train.log_interval": 1,
    "data.workers": 1,
}
TOKENS = 256  # 4 steps


def tiny_flags(text_file: Path) -> list[str]:
    flags = ["--data", str(text_file)]
    for key, value in TINY.items():
        flags += [f"--{key}", str(value)]
    return flags


@pytest.fixture(autouse=True)
def fixed_matmul_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Trainer measures the machine's matmul peak (seconds); MFU is not tested here."""
    monkeypatch.setattr(loop, "measure_matmul_peak", lambda *args: 1e12)


@pytest.fixture(scope="module")
def mqa_toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("configs") / "mqa.toml"
    path.write_text('preset = "baby-shakespeare"\n[model]\nn_kv_head = 1\n', encoding="utf-8")
    return path


def compare_baseline_and_mqa(text: Path, mqa_toml: Path, out: Path) -> Comparison:
    return run_comparison(
        ["baby-shakespeare", str(mqa_toml)],
        {**TINY, "data.source": str(text)},
        out,
        seeds=2,
        budget=Budget(tokens=TOKENS),
        command="tinygpt compare ...",
    )


@pytest.fixture(scope="module")
def compared(
    tmp_path_factory: pytest.TempPathFactory,
    small_text_file: Path,
    mqa_toml: Path,
    isolated_cache: Path,
) -> Iterator[tuple[Comparison, Path]]:
    """The baseline preset against its multi-query variant, 2 seeds of 4 steps, run once."""
    out = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "measure_matmul_peak", lambda *args: 1e12)
        comparison = compare_baseline_and_mqa(small_text_file, mqa_toml, out)
    yield comparison, out


def test_table_has_a_row_per_config_with_its_param_count(compared):
    comparison, out = compared
    table = (out / "compare.md").read_text(encoding="utf-8")
    for name in ("baby-shakespeare", "mqa"):
        config = read_run_config(out / "runs" / name / "seed-0")
        assert config.train.max_iters == 4
        params = GPT(config.model).num_params()
        (row,) = [line for line in table.splitlines() if line.startswith(f"| {name} |")]
        assert row.split(" | ")[1] == f"{params:,}"
    assert [r.name for r in comparison.results] == ["baby-shakespeare", "mqa"]
    assert comparison.results[1].params < comparison.results[0].params  # one key/value head
    assert "256 training tokens per run" in table


def whole_split_loss(out, entry, k) -> float:
    """Mean loss of the run's last checkpoint over every window of the validation tokens."""
    from tinygpt.data.memmap import open_tokens
    from tinygpt.data.prepare import prepare_dataset
    from tinygpt.eval.evaluate import split_loss
    from tinygpt.run.load import load_model_from_run

    model, _, config = load_model_from_run(out / "runs" / entry["name"] / f"seed-{k}", "last")
    prepared = prepare_dataset(config.data)
    return split_loss(model, open_tokens(prepared.val_path, prepared.dtype), 7).loss


def test_json_has_per_seed_val_losses_over_the_whole_validation_split(compared):
    _, out = compared
    document = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    for entry in document["configs"]:
        assert [s["seed"] for s in entry["seeds"]] == [1337, 1338]
        for k, seed in enumerate(entry["seeds"]):
            records = read_metrics(out / "runs" / entry["name"] / f"seed-{k}")
            evals = [r for r in records if r["kind"] == "eval"]
            assert seed["sampled_val_loss"] == evals[-1]["val_loss"]
            assert evals[-1]["step"] == 4
            assert seed["final_val_loss"] == pytest.approx(whole_split_loss(out, entry, k))
            assert seed["tokens_seen"] == TOKENS
        losses = [s["final_val_loss"] for s in entry["seeds"]]
        assert entry["val_loss_mean"] == pytest.approx(sum(losses) / 2)
        assert entry["bits_per_char"] == pytest.approx(entry["val_loss_mean"] / math.log(2))
    # different seeds really are different runs
    assert len({s["final_val_loss"] for s in document["configs"][0]["seeds"]}) == 2


def test_val_curves_png_is_written(compared):
    _, out = compared
    assert (out / "val_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_second_call_reuses_the_finished_runs(compared, small_text_file, mqa_toml, caplog):
    first, out = compared
    metrics = sorted(out.glob("runs/*/seed-*/metrics.jsonl"))
    before = [path.read_bytes() for path in metrics]
    with caplog.at_level(logging.INFO):
        again = compare_baseline_and_mqa(small_text_file, mqa_toml, out)
    assert [path.read_bytes() for path in metrics] == before
    assert caplog.text.count("reusing " + str(out)) == 4
    assert again.to_dict() == first.to_dict()


def test_a_changed_config_in_the_same_out_is_refused(compared, small_text_file, mqa_toml, capsys):
    _, out = compared
    argv = ["compare", "baby-shakespeare", str(mqa_toml), "--out", str(out), "--seeds", "2"]
    argv += ["--tokens", str(TOKENS), *tiny_flags(small_text_file), "--learning_rate", "0.002"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "learning_rate 0.001 -> 0.002" in error
    assert "choose another --out or delete that folder" in error


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (["--tokens", "256", "--minutes", "1"], "exactly one budget"),
        ([], "exactly one budget"),
        (["--tokens", "63"], "less than one step"),
        (["--tokens", "0"], "must be greater than 0"),
    ],
)
def test_a_bad_budget_is_a_one_line_error(budget, message, small_text_file, tmp_path, capsys):
    argv = ["compare", "baby-shakespeare", "--out", str(tmp_path / "out"), *budget]
    assert main([*argv, *tiny_flags(small_text_file)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("tinygpt: error: ") and error.count("\n") == 1
    assert message in error
    assert not (tmp_path / "out" / "runs").exists()


@pytest.mark.parametrize(
    ("configs", "seeds", "message"),
    [
        (["baby-shakespear"], "1", "unknown preset 'baby-shakespear'"),
        (["missing.toml"], "1", "missing.toml does not exist"),
        (["baby-shakespeare"], "0", "--seeds 0 must be at least 1"),
        (["gptiny", "gptiny"], "1", "both named 'gptiny'"),
    ],
)
def test_bad_configs_are_one_line_errors(configs, seeds, message, tmp_path, capsys):
    argv = ["compare", *configs, "--out", str(tmp_path / "out"), "--seeds", seeds]
    assert main([*argv, "--tokens", "1e6"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


def test_a_minutes_budget_trains_for_the_measured_step_time(small_text_file, tmp_path):
    out = tmp_path / "out"
    variant = load_variant("baby-shakespeare", {**TINY, "source": str(small_text_file)})
    config, prepared = with_prepared_vocab(variant.config)
    seconds = step_seconds_for(dataclasses.replace(variant, config=config), prepared, out)
    assert seconds > 0
    minutes = 6.5 * seconds / 60  # six and a half steps
    comparison = run_comparison(
        ["baby-shakespeare"],
        {**TINY, "source": str(small_text_file)},
        out,
        seeds=1,
        budget=Budget(minutes=minutes),
        command="tinygpt compare ...",
    )
    (result,) = comparison.results
    assert result.max_iters == 6  # the step time recorded in step_times.json was reused
    assert result.seeds[0].tokens_seen == 6 * 64
    assert result.val_loss_std is None
    assert "min of training steps" in (out / "compare.md").read_text(encoding="utf-8")


def test_an_interrupted_comparison_continues_where_it_stopped(
    small_text_file, tmp_path, monkeypatch, capsys
):
    real_fit = loop.Trainer.fit

    def interrupted_fit(self: loop.Trainer) -> loop.TrainResult:
        result = real_fit(self, stop_at=2)  # as if Ctrl-C came at step 2
        return dataclasses.replace(result, stop_reason="interrupted")

    argv = ["compare", "baby-shakespeare", "--out", str(tmp_path), "--seeds", "1"]
    argv += ["--tokens", str(TOKENS), *tiny_flags(small_text_file)]
    monkeypatch.setattr(loop.Trainer, "fit", interrupted_fit)
    assert main(argv) == 130
    assert "continue with: tinygpt compare baby-shakespeare" in capsys.readouterr().out
    monkeypatch.setattr(loop.Trainer, "fit", real_fit)
    assert main(argv) == 0
    records = read_metrics(tmp_path / "runs" / "baby-shakespeare" / "seed-0")
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 1, 2, 3, 4]
    assert "| baby-shakespeare |" in capsys.readouterr().out


def test_bits_per_character_spreads_the_loss_over_characters():
    # 2 ln 2 nats = 2 bits per token; 1,000 tokens cover 4,000 characters: 0.5 bits each
    assert bits_per_unit(2 * math.log(2), tokens=1000, units=4000) == pytest.approx(0.5)
    assert bits_per_unit(math.log(2), tokens=10, units=10) == pytest.approx(1.0)


def result_with(name: str, losses: list[float], val_chars: int | None = 400) -> ConfigResult:
    seeds = [
        SeedResult(k, f"runs/{name}/seed-{k}", loss, loss, 64, 1.0, 100.0, [])
        for k, loss in enumerate(losses)
    ]
    return ConfigResult(name, 4, 64, 1000, 6000.0, 100, val_chars, val_chars, seeds)


def test_bits_per_character_is_n_a_for_data_prepared_without_character_counts():
    baseline = result_with("base", [2.0, 2.2], val_chars=400)
    old_data = result_with("old", [2.0, 2.2], val_chars=None)
    assert baseline.bits_per_char == pytest.approx(2.1 * 100 / 400 / math.log(2))
    assert old_data.bits_per_char is None
    table = Comparison("tinygpt compare ...", Budget(tokens=256), 2, [baseline, old_data])
    assert table.to_markdown().splitlines()[-1].split(" | ")[-2] == "n/a"


def test_a_difference_inside_the_combined_std_is_within_noise():
    baseline = result_with("base", [2.0, 2.2])  # std 0.141
    assert noise_verdict(baseline, result_with("close", [1.9, 2.1])) == "within noise"
    assert noise_verdict(baseline, result_with("lower", [1.5, 1.6])) == "better"
    assert noise_verdict(baseline, result_with("higher", [2.6, 2.7])) == "worse"
    assert noise_verdict(baseline, result_with("once", [1.0])) == "one seed, no error bar"
    row = Comparison("c", Budget(tokens=256), 2, [baseline, result_with("close", [1.9, 2.1])])
    assert "-0.1000 (within noise)" in row.to_markdown()


def test_budget_needs_exactly_one_of_tokens_and_minutes():
    with pytest.raises(ConfigError, match="exactly one budget"):
        Budget(tokens=10, minutes=1.0)
    with pytest.raises(ConfigError, match="exactly one budget"):
        Budget()
