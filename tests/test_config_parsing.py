"""How text becomes a RunConfig: each field's type parses its value, the layers apply in order
(defaults < preset < --config file < flags), and every mistake is one ConfigError line."""

from typing import Literal

import pytest

from tinygpt.config import RunConfig, TrainConfig
from tinygpt.config_parsing import (
    apply_given_settings,
    apply_overrides,
    check_given_settings,
    config_from_dict,
    flatten_toml,
    given_field_names,
    load_toml_overrides,
    parse_value,
    resolve_train_config,
)
from tinygpt.errors import ConfigError
from tinygpt.presets import get_preset

# -- parse_value: text (or a TOML/JSON value) to the field's type ------------------------------


@pytest.mark.parametrize(
    ("annotation", "raw", "expected"),
    [
        (int, "400", 400),
        (int, 400, 400),
        (int, "1e4", 10_000),  # whole numbers may be written as floats
        (int, "5000.0", 5000),
        (int, 3.0, 3),
        (int, "1_000", 1000),  # TOML's and Python's digit separators
        (float, "3e-4", 3e-4),
        (float, 2, 2.0),
        (bool, "true", True),
        (bool, "Yes", True),
        (bool, "on", True),
        (bool, "1", True),
        (bool, "false", False),
        (bool, "off", False),
        (bool, "0", False),
        (bool, False, False),
        (str, "hf:roneneldan/TinyStories", "hf:roneneldan/TinyStories"),
        (Literal["mlp", "swiglu"], "swiglu", "swiglu"),
        (int | None, "none", None),
        (int | None, None, None),
        (int | None, "7", 7),
    ],
)
def test_parse_value_converts_by_the_fields_type(annotation, raw, expected):
    value = parse_value("field", annotation, raw)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("annotation", "raw", "message"),
    [
        (int, "2.5", "n='2.5' must be a whole number"),
        (int, "abc", "n='abc' must be a whole number"),
        (int, True, "n=True must be a whole number"),  # a TOML boolean is not a count
        (float, "nan", "n='nan' must be a finite number"),
        (float, "-inf", "n='-inf' must be a finite number"),
        (float, "fast", "n='fast' must be a number"),
        (float, False, "n=False must be a number"),
        (bool, "maybe", "n='maybe' must be true or false"),
        (str, 3, "n=3 must be text"),
        (Literal["mlp", "swiglu"], "gated", "n='gated' is not one of mlp, swiglu"),
    ],
)
def test_parse_value_refuses_a_wrong_value_in_one_line_naming_it(annotation, raw, message):
    with pytest.raises(ConfigError) as raised:
        parse_value("n", annotation, raw)
    assert str(raised.value) == message


def test_parse_value_never_evaluates_text_as_code():
    with pytest.raises(ConfigError, match="must be a whole number"):
        parse_value("n", int, "__import__('os').getpid()")


def test_a_field_type_the_parser_does_not_know_is_a_bug_not_a_user_error():
    with pytest.raises(TypeError, match="unsupported config type"):
        parse_value("n", list, "[1]")


# -- apply_overrides, TOML and config.json ------------------------------------------------------


def test_overrides_name_a_field_alone_or_with_its_section_in_either_spelling():
    config = apply_overrides(
        RunConfig(), {"n_layer": "3", "train.max-iters": "7", "model.n-embd": "96"}
    )
    assert (config.model.n_layer, config.train.max_iters, config.model.n_embd) == (3, 7, 96)
    assert apply_overrides(config, {}) == config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_layerz": "3"}, "unknown config field 'n_layerz'"),
        ({"train.n_layer": "3"}, "unknown config field 'train.n_layer'"),  # wrong section
        ({"n_head": "5"}, "n_embd=384 is not divisible by n_head=5"),  # the dataclass's check
    ],
)
def test_a_bad_override_is_one_config_error_line(overrides, message):
    with pytest.raises(ConfigError) as raised:
        apply_overrides(RunConfig(), overrides)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_toml_sections_and_dotted_keys_flatten_alike():
    nested = flatten_toml({"train": {"max_iters": 4}, "model": {"n_layer": 2}}, "a.toml")
    dotted = flatten_toml({"train.max_iters": 4, "model.n_layer": 2}, "a.toml")
    assert nested == dotted == {"train.max_iters": 4, "model.n_layer": 2}
    with pytest.raises(ConfigError, match=r"a\.toml: unknown section \[optim\]; use model, data"):
        flatten_toml({"optim": {"lr": 1}}, "a.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[train\nmax_iters = 4\n", "is not valid TOML"),
        ("[train]\nmax_iters = 'many'\n", "max_iters='many' must be a whole number"),
        ("[train]\nwarmup = 4\n", "unknown config field 'train.warmup'"),
    ],
)
def test_a_bad_config_file_is_one_config_error_line(tmp_path, text, message):
    (tmp_path / "run.toml").write_text(text)
    with pytest.raises(ConfigError) as raised:
        resolve_train_config(None, tmp_path / "run.toml", {})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_config_file_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*missing\.toml does not exist"):
        load_toml_overrides(tmp_path / "missing.toml")


def test_config_json_rebuilds_the_same_config():
    config = apply_overrides(get_preset("hybrid-tinystories"), {"n_layer": "2", "prompt": "Once\n"})
    rebuilt = config_from_dict(config.to_dict())
    assert rebuilt == config and rebuilt.preset == "hybrid-tinystories"


# -- precedence: defaults < preset < --config file < flags -------------------------------------


def test_each_layer_overrides_the_one_below(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nlearning_rate = 0.002\nweight_decay = 0.05\n")
    flags = {"learning_rate": "0.003"}
    config = resolve_train_config("gptiny", toml, flags)
    assert config.train.patience == TrainConfig().patience  # no layer sets it: the default
    assert config.model.n_layer == get_preset("gptiny").model.n_layer == 3  # the preset
    assert config.train.weight_decay == 0.05  # the file, over the preset's 0.01
    assert config.train.learning_rate == 0.003  # the flag, over the file and the preset
    assert resolve_train_config(None, None, {}) == get_preset("baby-shakespeare")  # the default


def test_a_config_file_may_name_its_preset_as_compare_recipes_do(tmp_path):
    toml = tmp_path / "recipe.toml"
    toml.write_text('preset = "gptiny"\n[train]\nweight_decay = 0.05\n')
    config = resolve_train_config(None, toml, {})
    assert config.preset == "gptiny" and config.model.n_layer == 3
    assert config.train.weight_decay == 0.05
    assert resolve_train_config("gptiny", toml, {}) == config  # the flag may repeat it


@pytest.mark.parametrize(
    ("preset_line", "flag", "message"),
    [
        ('preset = "gptiny"', "baby-shakespeare", "--preset baby-shakespeare contradicts"),
        ("preset = 3", None, "must be a preset name in quotes"),
        ('preset = "no-such"', None, "no-such"),
    ],
)
def test_a_config_files_bad_preset_is_one_config_error_line(tmp_path, preset_line, flag, message):
    toml = tmp_path / "recipe.toml"
    toml.write_text(preset_line + "\n")
    with pytest.raises(ConfigError) as raised:
        resolve_train_config(flag, toml, {})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_max_iters_given_wins_over_the_presets_epochs():
    config = resolve_train_config("modern-tinystories", None, {"max-iters": "400"})
    assert config.train.max_iters == 400 and config.train.epochs == 0


def test_the_flag_wins_over_the_file_and_the_file_over_the_preset(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nepochs = 2\n")
    assert resolve_train_config("baby-shakespeare", toml, {}).train.epochs == 2
    config = resolve_train_config("baby-shakespeare", toml, {"max_iters": "300"})
    assert (config.train.max_iters, config.train.epochs) == (300, 0)


def given(config: RunConfig, origin: str = "the flags", **settings: object) -> RunConfig:
    return apply_given_settings(config, {k: str(v) for k, v in settings.items()}, origin)


def test_max_iters_given_drops_the_lower_layers_epochs():
    preset = get_preset("modern-tinystories")
    assert preset.train.epochs > 0
    config = given(preset, max_iters=400)
    assert (config.train.max_iters, config.train.epochs) == (400, 0)


def test_epochs_given_wins_over_a_lower_max_iters():
    """The run's length then follows the data: steps_for_epochs turns epochs into steps."""
    from tinygpt.run.sizing import steps_for_epochs

    config = given(get_preset("baby-shakespeare"), epochs=2)
    assert config.train.epochs == 2
    tokens_per_step = config.train.batch_size * config.model.block_size  # 12 x 64
    assert steps_for_epochs(config, 1_000_000).max_iters == -(-2 * 1_000_000 // tokens_per_step)


def test_a_decay_over_the_whole_run_follows_the_new_length():
    preset = get_preset("baby-shakespeare")
    assert preset.train.lr_decay_iters == preset.train.max_iters  # "decay over the whole run"
    assert given(preset, max_iters=400).train.lr_decay_iters == 0  # 0: over max_iters
    kept = given(preset, max_iters=400, lr_decay_iters=300)
    assert kept.train.lr_decay_iters == 300


def test_a_decay_shorter_than_the_run_stays():
    preset = given(RunConfig(), "file", max_iters=1000, lr_decay_iters=500)
    assert given(preset, max_iters=2000).train.lr_decay_iters == 500


def test_epochs_and_max_iters_in_one_place_conflict():
    with pytest.raises(ConfigError, match=r"config file a\.toml set both epochs=3 and max_iters"):
        given(RunConfig(), "config file a.toml", epochs=3, max_iters=100)
    assert given(RunConfig(), epochs=0, max_iters=100).train.max_iters == 100  # 0: off


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"warmup_iters": 500, "max_iters": 100}, "warmup_iters=500 is not below max_iters=100"),
        ({"warmup_iters": 200, "lr_decay_iters": 150}, "lr_decay_iters=150 is not after"),
    ],
)
def test_given_step_counts_that_contradict_each_other_are_refused(settings, message):
    config = given(RunConfig(), **settings)
    with pytest.raises(ConfigError, match=message):
        check_given_settings(config, given_field_names(settings))
    check_given_settings(config, set())  # from a preset: a short run may keep its warm-up


def test_given_field_names_accepts_every_spelling():
    names = given_field_names({"train.max_iters": 1, "max-iters": 2, "model.n-layer": 3})
    assert names == {"max_iters", "n_layer"}


def test_a_directory_as_config_file_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; give a TOML file"):
        load_toml_overrides(tmp_path)
