"""The command line as a whole: one line and exit 2 for every mistake, both spellings of
every flag, --version, a closed pipe."""

import errno
import importlib.metadata
import os
import subprocess

import pytest
from cli_helpers import assert_one_line_error, run_cli, tinygpt_command

from tinygpt.cli import build_parser, main, parse_args
from tinygpt.commands import training
from tinygpt.commands.arguments import other_spelling


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["train", "--preset", "nope", "--out", "{tmp}/r"], ["unknown preset 'nope'"]),
        (
            ["train", "--out", "{tmp}/r", "--n_layerz", "3"],
            ["unrecognized flag --n_layerz; did you mean --n_layer?", "`tinygpt train --help`"],
        ),
        (["train", "--out", "{tmp}/r", "--n_layer", "abc"], ["n_layer='abc'", "whole number"]),
        (["train", "--out", "{tmp}/r", "--learning_rate", "-1"], ["learning_rate=-1.0"]),
        (["train", "--out", "{tmp}/r", "--block_size", "0"], ["block_size=0"]),
        (["train", "--out", "{tmp}/r", "--n_embd", "100", "--n_head", "3"], ["n_head=3"]),
        (["train", "--out", "{tmp}/r", "--dropout", "1.5"], ["dropout=1.5"]),
        (["train", "--out", "{tmp}/r", "--dtype", "int8"], ["dtype='int8'"]),
        (["train", "--out", "{tmp}/r", "--vocab_size", "10"], ["vocab_size=10 is smaller"]),
        (["train", "--out", "{tmp}/r", "--bias", "maybe"], ["bias='maybe'", "true or false"]),
        (["train", "--out", "{tmp}/r", "--data", "{tmp}/missing.txt"], ["does not exist"]),
        (["train", "--out", "{tmp}/r", "--data", "{tmp}/empty.txt"], ["empty"]),
        (["train", "--out", "{tmp}/r", "--data", "{tmp}/binary.bin"], ["binary"]),
        (["train", "--out", "{tmp}/r", "--data", "{tmp}/latin1.txt"], ["UTF-8"]),
        (["train", "--out", "{tmp}/r", "--config", "{tmp}/missing.toml"], ["does not exist"]),
        (["train"], ["--out"]),
        (["sample", "{tmp}/no-run"], ["does not exist"]),
        (["sample", "{tmp}"], ["not a tinygpt run"]),
        (["plot", "{tmp}/no-run"], ["does not exist"]),
        (["serve", "{tmp}", "--max-batch", "0"], ["--max-batch 0 must be at least 1"]),
        (["sample", "{tmp}", "--precision", "int8"], ["--precision", "'int8'"]),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, argv, fragments):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "binary.bin").write_bytes(b"\x00\x01\x02PNG" * 100)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    code, _, err = run_cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "r").exists()


def test_every_flag_of_every_command_takes_both_spellings():
    for subcommand in build_parser().subcommands.values():
        registered = subcommand._option_string_actions
        for action in subcommand._actions:
            for flag in action.option_strings:
                assert registered[other_spelling(flag)] is action, (subcommand.prog, flag)


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["train", "--max-iters", "400"], "train.max_iters", "400"),
        (["train", "--model.n-layer", "3"], "model.n_layer", "3"),
        (["sample", "RUN", "--max_new_tokens", "7"], "max_new_tokens", 7),
        (["chat", "RUN", "--top_p", "0.5"], "top_p", 0.5),
        (["eval", "RUN", "--batch_size", "3"], "batch_size", 3),
        (["finetune", "RUN", "--lora_r", "2", "--out", "X"], "lora_r", 2),
    ],
)
def test_hyphens_and_underscores_both_parse(argv, dest, value):
    assert getattr(parse_args(argv), dest) == value


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["train", "--max-iterz", "3"], ["--max-iterz; did you mean --max-iters?", "train --help"]),
        (["sample", "RUN", "--temprature", "1"], ["did you mean --temperature?", "sample --help"]),
        (["eval", "RUN", "--zzzz"], ["unrecognized flag --zzzz (see `tinygpt eval --help`)"]),
        (["plot", "RUN", "extra"], ["unrecognized arguments: extra", "plot --help"]),
    ],
)
def test_an_unknown_flag_gets_the_closest_name_and_its_commands_help(capsys, argv, fragments):
    assert_one_line_error(*run_cli(capsys, *argv)[::2], *fragments)


def test_version_prints_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"tinygpt {importlib.metadata.version('tinygpt')}\n"


def test_output_into_a_closed_pipe_exits_quietly():
    """`tinygpt presets | head`, the reader gone before the first write. `sample` writes as it
    goes, so its BrokenPipeError comes from the handler; the presets' from the flush at the
    end of main. Both end in the same one place."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    command = tinygpt_command("presets")
    try:
        done = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert done.stderr == b""


def test_a_wrong_path_is_exit_2_and_a_full_disk_exit_1(capsys, monkeypatch):
    def fail_with(error: OSError):
        def handler(args):
            raise error

        monkeypatch.setattr(training, "run_presets", handler)
        return run_cli(capsys, "presets")

    code, _, err = fail_with(NotADirectoryError(errno.ENOTDIR, "Not a directory", "x/y"))
    assert_one_line_error(code, err, "Not a directory")
    code, _, err = fail_with(OSError(errno.ENOSPC, "No space left on device"))
    assert code == 1 and err == "tinygpt: error: [Errno 28] No space left on device\n"
