import errno
import importlib.metadata
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import TINY, assert_one_line_error, run_cli

from tinygpt import cli
from tinygpt.cli import build_parser, main, other_spelling, parse_args, resolve_train_config
from tinygpt.errors import ConfigError


@pytest.fixture(scope="module")
def trained_run_once(tmp_path_factory, small_text_file) -> Path:
    """A tiny run, trained once for the module; each test gets its own copy (`trained_run`)."""
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    argv = ["train", "--data", small_text_file, "--out", run_dir, *TINY,
            "--max_iters", "10", "--eval_interval", "5"]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    return run_dir


@pytest.fixture
def trained_run(trained_run_once, tmp_path) -> Path:
    """A copy of the trained run, links kept as links, that the test may damage."""
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run_once, run_dir, symlinks=True)
    return run_dir


def test_presets_lists_one_line_each(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == [
        "baby-shakespeare",
        "gptiny",
        "tinygpt-char",
        "tinystories-small",
        "dialog-chatbot",
        "baseline-tinystories",
        "gqa-tinystories",
        "hybrid-tinystories",
        "modern-tinystories",
    ]


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


def test_train_then_sample_with_the_same_seed_gives_the_same_text(capsys, trained_run):
    capsys.readouterr()
    args = ["sample", trained_run, "--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", "7"]
    code, first, _ = run_cli(capsys, *args)
    assert code == 0 and first.startswith("ROMEO:") and len(first) == len("ROMEO:") + 40 + 1
    assert run_cli(capsys, *args)[1] == first
    assert run_cli(capsys, *args[:-1], "8")[1] != first
    exact = run_cli(capsys, *args, "--precision", "float32")[1]  # float16 weights by default
    assert len(exact) == len(first) and run_cli(capsys, *args, "--precision", "float32")[1] == exact


def test_sampling_past_the_context_slides_the_window(capsys, trained_run):
    code, out, _ = run_cli(
        capsys, "sample", trained_run, "--max-new-tokens", "50", "--prompt", "x" * 30
    )  # block_size is 16
    assert code == 0 and len(out) == 30 + 50 + 1


def test_num_samples_prints_that_many_continuations_of_the_prompt(capsys, trained_run):
    args = ["sample", trained_run, "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "3"]
    code, out, _ = run_cli(capsys, *args, "--num-samples", "3")
    samples = out.rstrip("\n").split("\n---------------\n")
    assert code == 0 and len(samples) == 3
    assert all(s.startswith("ROMEO:") and len(s) == len("ROMEO:") + 20 for s in samples)
    assert len(set(samples)) == 3  # different draws, not one copied
    assert run_cli(capsys, *args, "--num-samples", "3")[1] == out  # seeded
    assert_one_line_error(*run_cli(capsys, *args, "--num-samples", "0")[::2], "--num-samples")


def test_plot_writes_a_png(capsys, trained_run):
    code, out, _ = run_cli(capsys, "plot", trained_run)
    assert code == 0
    png = Path(out.strip())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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


def test_prompt_outside_the_vocabulary_is_refused(capsys, trained_run):
    code, _, err = run_cli(capsys, "sample", trained_run, "--prompt", "naïve 中文")
    assert_one_line_error(code, err, "outside the vocabulary", "中")


def test_empty_prompt_is_refused(capsys, trained_run):
    code, _, err = run_cli(capsys, "sample", trained_run, "--prompt", "")
    assert_one_line_error(code, err, "prompt is empty")


def test_sample_flags_are_validated_like_config_values(capsys, trained_run):
    code, _, err = run_cli(capsys, "sample", trained_run, "--top-p", "1.5")
    assert_one_line_error(code, err, "--top-p 1.5 must be at most 1")


def test_corrupted_checkpoint_is_refused(capsys, trained_run):
    weights = trained_run / "checkpoints" / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    code, _, err = run_cli(capsys, "sample", trained_run)
    assert_one_line_error(code, err, "corrupted")


def test_resume_with_a_changed_model_shape_is_refused(capsys, trained_run):
    code, _, err = run_cli(capsys, "train", "--resume", trained_run, "--n_embd", "64")
    assert_one_line_error(code, err, "model shape", "n_embd 32 -> 64")


def test_training_into_an_existing_run_changes_nothing(capsys, trained_run, small_text_file):
    before = {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()}
    code, _, err = run_cli(capsys, "train", "--data", small_text_file, "--out", trained_run)
    assert_one_line_error(code, err, "already holds a run")
    assert {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()} == before


def test_config_file_sits_between_preset_and_flags(capsys, tmp_path, small_text_file):
    toml = tmp_path / "run.toml"
    toml.write_text(
        f'[data]\nsource = "{small_text_file}"\n[train]\nmax_iters = 4\n'
        "eval_interval = 2\nlearning_rate = 0.002\n"
    )
    code, _, err = run_cli(
        capsys,
        "train",
        "--config",
        toml,
        "--out",
        tmp_path / "r",
        *TINY,
        "--learning_rate",
        "0.003",
    )
    assert code == 0, err
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["train"]["max_iters"] == 4  # from the file
    assert saved["train"]["learning_rate"] == 0.003  # the flag wins
    assert saved["model"]["n_embd"] == 32 and saved["preset"] == "baby-shakespeare"


def tinygpt_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "tinygpt.cli", *map(str, args)]


def start_endless_training(run_dir: Path, text: Path, eval_interval: int) -> subprocess.Popen:
    command = tinygpt_command(
        "train", "--data", text, "--out", run_dir, *TINY,
        "--max_iters", 100_000, "--eval_interval", eval_interval,
    )  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until_logged(run_dir: Path, step: int, timeout: float = 120) -> None:
    metrics, deadline = run_dir / "metrics.jsonl", time.monotonic() + timeout
    while not (metrics.exists() and f'"step": {step},' in metrics.read_text()):
        assert time.monotonic() < deadline, f"step {step} was never logged"
        time.sleep(0.05)


def last_checkpoint_step(run_dir: Path) -> int:
    return json.loads((run_dir / "checkpoints" / "last" / "meta.json").read_text())["step"]


def resume_to(run_dir: Path, max_iters: int) -> subprocess.CompletedProcess:
    command = tinygpt_command("train", "--resume", run_dir, "--max_iters", max_iters)
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_finishes_the_run(tmp_path, small_text_file):
    """The real binary: SIGINT mid-run saves a checkpoint and exits 130; --resume completes."""
    run_dir = tmp_path / "run"
    process = start_endless_training(run_dir, small_text_file, eval_interval=50)
    wait_until_logged(run_dir, 60)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "resume with: tinygpt train --resume" in out
    step = last_checkpoint_step(run_dir)
    assert step >= 60  # saved where it stopped, not at the last evaluation (50)
    resumed = resume_to(run_dir, step + 20)
    assert resumed.returncode == 0, resumed.stderr
    assert f"finished at step {step + 20}" in resumed.stdout


@pytest.mark.slow
def test_kill_9_loses_only_the_steps_since_the_last_checkpoint(tmp_path, small_text_file):
    run_dir = tmp_path / "run"
    process = start_endless_training(run_dir, small_text_file, eval_interval=20)
    wait_until_logged(run_dir, 70)
    process.kill()
    process.communicate()
    step = last_checkpoint_step(run_dir)
    assert step >= 60 and step % 20 == 0
    resumed = resume_to(run_dir, step + 5)
    assert resumed.returncode == 0, resumed.stderr


def test_prepare_then_train_and_sample_with_a_trained_bpe(capsys, tmp_path, small_text_file):
    data = tmp_path / "prepared"
    code, out, err = run_cli(capsys, "prepare", small_text_file, "--out", data,
                             "--tokenizer", "bpe", "--tokenizer_vocab_size", "400")  # fmt: skip
    assert code == 0, err
    assert "train with: tinygpt train --data" in out
    assert {p.name for p in data.iterdir()} >= {"train.bin", "val.bin", "tokenizer.json"}
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", data, "--tokenizer", "bpe", "--out",
                           run_dir, *TINY, "--max_iters", "4", "--eval_interval", "2")  # fmt: skip
    assert code == 0, err
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["model"]["vocab_size"] == 400
    code, out, err = run_cli(
        capsys, "sample", run_dir, "--prompt", "KING", "--max-new-tokens", "20"
    )
    assert code == 0 and out.startswith("KING"), err


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--tokenizer", "wordpiece"], ["tokenizer='wordpiece'"]),
        (["--tokenizer", "bpe", "--tokenizer_vocab_size", "10"], ["tokenizer_vocab_size=10"]),
        (["--text_field", "body"], ["body"]),
    ],
)
def test_bad_prepare_input_exits_2_with_one_line(capsys, tmp_path, argv, fragments):
    source = tmp_path / "records.jsonl"
    source.write_text('{"text": "hello there"}\n{"text": "general kenobi"}\n', encoding="utf-8")
    code, _, err = run_cli(capsys, "prepare", source, "--out", tmp_path / "out", *argv)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_file_that_does_not_match_the_model_is_refused(capsys, trained_run, tmp_path):
    from tinygpt.tokenizers.char import CharTokenizer

    CharTokenizer.train("".join(chr(c) for c in range(32, 200))).save(
        trained_run / "tokenizer.json"
    )
    code, _, err = run_cli(capsys, "sample", trained_run)
    assert_one_line_error(code, err, "does not belong to this run")


# ----------------------------------------------------------------------------------------------
# Flag spellings, unknown flags, --version, --help


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


def test_sample_help_says_the_default_seed(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert "1337" in out and "--prompt-file" in out and "- or _" in out


# ----------------------------------------------------------------------------------------------
# Prompts from files, pipes, output paths


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


def test_a_wrong_path_is_exit_2_and_a_full_disk_exit_1(capsys, monkeypatch):
    def fail_with(error: OSError):
        def handler(args):
            raise error

        monkeypatch.setattr(cli, "run_presets", handler)
        return run_cli(capsys, "presets")

    code, _, err = fail_with(NotADirectoryError(errno.ENOTDIR, "Not a directory", "x/y"))
    assert_one_line_error(code, err, "Not a directory")
    code, _, err = fail_with(OSError(errno.ENOSPC, "No space left on device"))
    assert code == 1 and err == "tinygpt: error: [Errno 28] No space left on device\n"


# ----------------------------------------------------------------------------------------------
# A value given wins over the preset's


def test_max_iters_given_wins_over_the_presets_epochs():
    config = resolve_train_config("modern-tinystories", None, {"max-iters": "400"})
    assert config.train.max_iters == 400 and config.train.epochs == 0


def test_the_flag_wins_over_the_file_and_the_file_over_the_preset(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nepochs = 2\n")
    assert resolve_train_config("baby-shakespeare", toml, {}).train.epochs == 2
    config = resolve_train_config("baby-shakespeare", toml, {"max_iters": "300"})
    assert (config.train.max_iters, config.train.epochs) == (300, 0)


def test_epochs_and_max_iters_given_together_conflict(capsys, tmp_path):
    argv = ["train", "--out", tmp_path / "r", "--epochs", "2", "--max_iters", "10"]
    assert_one_line_error(*run_cli(capsys, *argv)[::2], "both epochs=2 and max_iters=10")
    assert not (tmp_path / "r").exists()


def test_resume_refuses_epochs(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path, "--epochs", "3")
    assert_one_line_error(code, err, "give --max_iters")


def test_the_memory_check_counts_fsdps_shards(monkeypatch):
    """Under torchrun, FSDP keeps a quarter of the training state on each of 4 ranks."""
    config = resolve_train_config("gptiny", None, {"device": "cpu"})
    elements = config.model.tensor_elements()
    monkeypatch.setattr("tinygpt.runtime.free_memory", lambda device: 8 * elements)  # < 16 B
    monkeypatch.setenv("WORLD_SIZE", "4")
    from tinygpt.train.loop import check_training_fits

    check_training_fits(resolve_train_config("gptiny", None, {"distributed": "fsdp"}))
    with pytest.raises(ConfigError, match="GiB, more than"):
        check_training_fits(config)  # ddp: every rank holds it all
