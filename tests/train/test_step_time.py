"""Timing training steps for `compare --minutes` writes nothing anywhere."""

import math

from tinygpt.config_parsing import apply_overrides
from tinygpt.data.prepare import prepare_dataset, with_prepared_settings
from tinygpt.run.sizing import with_vocab_size
from tinygpt.train.step_time import time_train_steps


def test_steps_are_timed_without_a_run_directory(tiny_run_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = with_prepared_settings(apply_overrides(tiny_run_config, {"dropout": 0.0}))
    prepared = prepare_dataset(config.data)
    seconds = time_train_steps(with_vocab_size(config, prepared.vocab_size), prepared, steps=3)
    assert len(seconds) == 3 and all(math.isfinite(s) and s > 0 for s in seconds)
    assert list(tmp_path.iterdir()) == []
