"""Flags shared by several commands: config fields with their help, prompts from files,
output paths."""

import io

import pytest
from cli_helpers import assert_one_line_error, run_cli

from tinygpt.cli import build_parser, main


def test_train_help_lists_every_field_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--n_layer",
        "--learning_rate",
        "--label_smoothing",
        "--unknown_chars",
        "--patience",
        "--top_p",
        "--compile",
    ):
        assert flag in out
    assert "(default: 0.2)" in out  # dropout


def test_sample_help_says_the_default_seed(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert "1337" in out and "--prompt-file" in out and "- or _" in out


def test_sample_flags_are_validated_like_config_values(capsys, trained_run):
    code, _, err = run_cli(capsys, "sample", trained_run, "--top-p", "1.5")
    assert_one_line_error(code, err, "--top-p 1.5 must be at most 1")


def test_prompt_file_and_stdin_give_the_same_text_as_prompt(capsys, monkeypatch, trained_run):
    prompt = "ROMEO:\nWhat"
    (trained_run.parent / "prompt.txt").write_text(prompt, encoding="utf-8")
    args = ["sample", trained_run, "--max-new-tokens", "10", "--seed", "3"]
    expected = run_cli(capsys, *args, "--prompt", prompt)[1]
    assert expected.startswith(prompt)
    assert run_cli(capsys, *args, "--prompt-file", trained_run.parent / "prompt.txt")[1] == expected
    monkeypatch.setattr("sys.stdin", io.StringIO(prompt))
    assert run_cli(capsys, *args, "--prompt_file", "-")[1] == expected


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--prompt-file", "{tmp}/missing.txt"], ["--prompt-file", "No such file"]),
        (["--prompt-file", "{tmp}/latin1.txt"], ["is not UTF-8 text"]),
        (["--prompt-file", "{tmp}", "--prompt", "x"], ["not allowed with argument"]),
    ],
)
def test_a_bad_prompt_file_is_one_line(capsys, tmp_path, argv, fragments):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    run_dir = tmp_path / "run"  # the prompt is read first
    assert_one_line_error(*run_cli(capsys, "sample", run_dir, *argv)[::2], *fragments)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["plot", "{run}", "--out", "{tmp}/curve.txt"], [".png, .pdf or .svg"]),
        (["plot", "{run}", "--out", "{tmp}/dir.png"], ["is a directory"]),
        (["eval", "{run}", "--out", "{tmp}/file"], ["is a file; give a directory"]),
        (["attention", "{run}", "--prompt", "x", "--out", "{tmp}/file"], ["is a file"]),
        (["compare", "gptiny", "--out", "{tmp}/file", "--tokens", "1e3"], ["is a file"]),
        (["train", "--out", "{tmp}/r", "--config", "{tmp}"], ["is a directory; give a TOML"]),
    ],
)
def test_a_file_where_a_directory_belongs_is_one_line_exit_2(capsys, tmp_path, argv, fragments):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "dir.png").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(tmp_path / "run")) for a in argv]
    assert_one_line_error(*run_cli(capsys, *argv)[::2], *fragments)
    assert (tmp_path / "file").read_text() == "mine"


def test_a_fields_flag_shows_the_fields_help_text_and_default():
    train = build_parser().subcommands["train"]
    assert train._option_string_actions["--n_layer"].help == "transformer blocks (default: 6)"
    assert train._option_string_actions["--model.n_layer"].help.startswith("transformer blocks")
