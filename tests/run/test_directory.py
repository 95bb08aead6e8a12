"""What a refusal to reuse or resume a run says about the config that changed."""

import dataclasses

from tinygpt.config import RunConfig
from tinygpt.run.directory import describe_changes

CONFIG = RunConfig()


def test_describe_changes_names_the_first_changed_fields_by_their_dotted_name():
    changed = dataclasses.replace(
        CONFIG, train=dataclasses.replace(CONFIG.train, learning_rate=2e-3, seed=1, eval_iters=3)
    )
    assert describe_changes(CONFIG.model, dataclasses.replace(CONFIG.model, n_layer=3)) == (
        "n_layer 6 -> 3"
    )
    described = describe_changes(CONFIG, changed)
    assert "train.learning_rate 0.001 -> 0.002" in described and described.count("->") == 3
    assert not described.endswith("...")
    described_more = describe_changes(
        CONFIG, dataclasses.replace(changed, model=dataclasses.replace(CONFIG.model, n_head=2))
    )
    assert described_more.endswith(", ...") and described_more.count("->") == 3
