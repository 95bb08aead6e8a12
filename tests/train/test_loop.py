import dataclasses
import json
import os
import shutil
import signal

import pytest
import torch

from tinygpt.config_parsing import apply_overrides
from tinygpt.errors import CheckpointError, ConfigError
from tinygpt.run.load import load_checkpoint
from tinygpt.run.metrics import read_metrics
from tinygpt.train.start import resume_run, start_run


def parameters_of(trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def test_resume_is_bit_exact(tiny_run_config, tmp_path):
    uninterrupted = start_run(tiny_run_config, tmp_path / "whole")
    uninterrupted.fit()

    first_half = start_run(tiny_run_config, tmp_path / "split")
    assert first_half.fit(stop_at=6).stop_reason == "stop_at"  # between two evaluations
    resumed = resume_run(tmp_path / "split")
    assert resumed.progress.step == 6
    result = resumed.fit()

    assert result.step == uninterrupted.progress.step == 12
    expected, actual = parameters_of(uninterrupted), parameters_of(resumed)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    whole_evals = [r for r in read_metrics(tmp_path / "whole") if r["kind"] == "eval"]
    split_evals = [r for r in read_metrics(tmp_path / "split") if r["kind"] == "eval"]
    assert [r["val_loss"] for r in whole_evals] == [r["val_loss"] for r in split_evals]


def test_training_lowers_the_validation_loss_and_logs_metrics(tiny_run_config, tmp_path):
    config = apply_overrides(tiny_run_config, {"max_iters": 40, "eval_interval": 20})
    trainer = start_run(config, tmp_path / "run")
    trainer.fit()
    records = read_metrics(tmp_path / "run")
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 20, 40]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert evals[0]["val_ppl"] == pytest.approx(2.718281828 ** evals[0]["val_loss"])
    logged = [r for r in records if r["kind"] == "train"]
    assert len(logged) == 20
    assert all(r["tokens_per_second"] > 0 and r["mfu"] > 0 for r in logged)


def test_early_stopping_stops_after_patience_evaluations_without_improvement(
    tiny_run_config, tmp_path
):
    # a learning rate of ~0 cannot improve the val loss: stop after `patience` evaluations
    config = apply_overrides(
        tiny_run_config,
        {"learning_rate": 1e-12, "min_lr": 0, "patience": 2, "max_iters": 100, "dropout": 0.0},
    )
    result = start_run(config, tmp_path / "run").fit()
    assert result.stop_reason == "early_stopping"
    assert result.step == 8  # evaluations at 0 (best), 4 and 8 (no better) -> stop


def test_resume_refuses_a_different_model_shape(tiny_run_config, tmp_path):
    start_run(tiny_run_config, tmp_path / "run").fit(stop_at=2)
    with pytest.raises(CheckpointError, match=r"model shape.*n_layer 2 -> 3"):
        resume_run(tmp_path / "run", {"n_layer": "3"})


def test_resume_may_extend_training(tiny_run_config, tmp_path):
    start_run(tiny_run_config, tmp_path / "run").fit()
    result = resume_run(tmp_path / "run", {"max_iters": "16"}).fit()
    assert result.step == 16
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["train"]["max_iters"] == 16


def test_resume_refuses_changed_source_text(tiny_run_config, tmp_path):
    source = tmp_path / "text.txt"
    source.write_text("to be or not to be, that is the question. " * 200)
    config = dataclasses.replace(
        tiny_run_config, data=dataclasses.replace(tiny_run_config.data, source=str(source))
    )
    start_run(config, tmp_path / "run").fit(stop_at=2)
    source.write_text("whether tis nobler in the mind to suffer. " * 200)
    with pytest.raises(CheckpointError, match="changed"):
        resume_run(tmp_path / "run")


def test_resume_refuses_the_same_text_split_another_way(tiny_run_config, tmp_path):
    """As when a newer tinygpt cuts the text otherwise: the run would train on what it
    validated on. run.json records the split the run was trained on."""
    start_run(tiny_run_config, tmp_path / "run").fit(stop_at=2)
    run_json = tmp_path / "run" / "run.json"
    info = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**info, "train_tokens": info["train_tokens"] - 100}))
    with pytest.raises(CheckpointError, match="now splits into"):
        resume_run(tmp_path / "run")


def test_resume_names_the_data_setting_that_changed(tiny_run_config, tmp_path):
    start_run(tiny_run_config, tmp_path / "run").fit(stop_at=2)
    with pytest.raises(CheckpointError, match=r"data settings \(val_fraction 0.1 -> 0.2\)"):
        resume_run(tmp_path / "run", {"val_fraction": "0.2"})


def test_resume_accepts_the_same_text_by_another_path(tiny_run_config, tmp_path, monkeypatch):
    start_run(tiny_run_config, tmp_path / "run").fit(stop_at=2)
    (tmp_path / "moved").mkdir()
    shutil.copy(tiny_run_config.data.source, tmp_path / "moved" / "text.txt")
    monkeypatch.chdir(tmp_path)
    resumed = resume_run(tmp_path / "run", {"source": "moved/text.txt"})  # relative, same sha256
    assert resumed.progress.step == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["source"] == (
        "moved/text.txt"
    )


def test_resume_may_change_dropout_which_is_not_a_shape(tiny_run_config, tmp_path):
    start_run(tiny_run_config, tmp_path / "run").fit(stop_at=2)
    resumed = resume_run(tmp_path / "run", {"dropout": "0.0"})
    assert resumed.progress.step == 2
    assert {m.p for m in resumed.model.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}


def test_resume_below_the_current_step_is_refused(tiny_run_config, tmp_path):
    start_run(tiny_run_config, tmp_path / "run").fit(stop_at=6)
    with pytest.raises(ConfigError, match="max_iters=4 is below step 6"):
        resume_run(tmp_path / "run", {"max_iters": "4"})
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["max_iters"] == 12


def test_a_run_stopped_before_its_first_checkpoint_resumes_from_step_0(tiny_run_config, tmp_path):
    start_run(tiny_run_config, tmp_path / "run")  # the directory exists; no checkpoint was saved
    resumed = resume_run(tmp_path / "run")
    assert resumed.progress.step == 0
    assert resumed.fit(stop_at=4).step == 4
    assert load_checkpoint(tmp_path / "run").step == 4


def test_ctrl_c_during_the_first_evaluation_still_saves_step_0(
    tiny_run_config, tmp_path, monkeypatch
):
    trainer = start_run(tiny_run_config, tmp_path / "run")
    evaluate = trainer.evaluate

    def interrupted_evaluation() -> dict[str, float]:
        os.kill(os.getpid(), signal.SIGINT)
        return evaluate()

    monkeypatch.setattr(trainer, "evaluate", interrupted_evaluation)
    result = trainer.fit()
    assert (result.stop_reason, result.step) == ("interrupted", 0)
    assert load_checkpoint(tmp_path / "run").step == 0


def test_a_torn_last_metrics_line_does_not_stop_a_resume(tiny_run_config, tmp_path):
    start_run(tiny_run_config, tmp_path / "run").fit(stop_at=6)
    with open(tmp_path / "run" / "metrics.jsonl", "a", encoding="utf-8") as metrics:
        metrics.write('{"kind": "train", "st')  # a kill -9 in the middle of an append
    assert resume_run(tmp_path / "run").fit().step == 12
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if '"eval"' in line] == [0, 4, 8, 12]


def test_a_new_run_never_overwrites_an_existing_one(tiny_run_config, tmp_path):
    start_run(tiny_run_config, tmp_path / "run").fit(stop_at=2)
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="already holds a run"):
        start_run(tiny_run_config, tmp_path / "run")
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert before == after


def test_bfloat16_training_on_cpu_runs_in_bfloat16(tiny_run_config, tmp_path):
    config = apply_overrides(tiny_run_config, {"dtype": "bfloat16"})
    trainer = start_run(config, tmp_path / "run")
    seen = []
    trainer.model.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.train_step()
    assert seen and set(seen) == {torch.bfloat16}
    assert trainer.model.blocks[0].attn.qkv.weight.dtype == torch.float32  # master weights


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_the_plain_module(
    tiny_run_config, tmp_path, train_eager_and_compiled
):
    config = apply_overrides(tiny_run_config, {"dropout": 0.0, "max_iters": 4})
    train_eager_and_compiled(config, tmp_path)
    saved = json.loads((tmp_path / "compiled" / "checkpoints" / "last" / "meta.json").read_text())
    assert saved["step"] == 4
    keys = load_checkpoint(tmp_path / "compiled").model_state.keys()
    assert not any(key.startswith("_orig_mod") for key in keys)
