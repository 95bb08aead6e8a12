"""`tinygpt presets`, `prepare`, `train` and `plot`: from a corpus to a trained run and its
loss curves."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinygpt.commands.arguments import (
    add_data_flag,
    add_field_flags,
    field_overrides,
    image_path,
)
from tinygpt.config import RunConfig
from tinygpt.config_parsing import (
    apply_overrides,
    given_field_names,
    given_settings,
    resolve_train_config,
)
from tinygpt.errors import CheckpointError, ConfigError
from tinygpt.presets import DEFAULT_PRESET, PRESETS, describe_preset

if TYPE_CHECKING:
    from tinygpt.commands.arguments import Commands

log = logging.getLogger("tinygpt")


def add_presets_command(commands: Commands) -> None:
    presets = commands.add_parser("presets", help="list the named configurations")
    presets.set_defaults(handler=run_presets)


def add_train_command(commands: Commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a model (or resume a run)",
        usage="tinygpt train [--preset NAME] [--config FILE] (--out RUN_DIR | --resume RUN_DIR) "
        "[--init-from RUN_OR_HF_DIR] [--data PATH_OR_URL] [--FIELD VALUE ...]",
        description="Train a model. Any config field can be set with --FIELD VALUE "
        "(or --SECTION.FIELD VALUE); precedence: defaults < --preset < --config < flags.",
    )
    train.add_argument("--preset", help=f"starting configuration (default {DEFAULT_PRESET})")
    train.add_argument("--config", type=Path, help="a TOML file of fields, by section")
    train.add_argument("--out", type=Path, help="the new run directory")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run")
    train.add_argument(
        "--init-from",
        type=Path,
        metavar="RUN_OR_HF_DIR",
        help="start a new run from this run's best weights or this Hugging Face model (its "
        "shape and tokenizer; a fresh optimizer)",
    )
    add_data_flag(train, "text to train on (default: TinyShakespeare)")
    add_field_flags(train)
    train.set_defaults(handler=run_train)


def add_prepare_command(commands: Commands) -> None:
    prepare = commands.add_parser(
        "prepare",
        help="tokenize a corpus into memory-mapped token files",
        usage="tinygpt prepare SOURCE --out DIR [--tokenizer NAME] [--DATA_FIELD VALUE ...]",
        description="Tokenize SOURCE (text file, folder, glob, JSON/JSONL, URL, hf:NAME, or a "
        "corpus name) into DIR/train.bin, val.bin, tokenizer.json and meta.json; train on it "
        "with `tinygpt train --data DIR`. Interrupted runs resume.",
    )
    prepare.add_argument("source", metavar="SOURCE")
    prepare.add_argument("--out", type=Path, required=True, help="the prepared-data directory")
    add_field_flags(prepare, sections=("data",))
    prepare.set_defaults(handler=run_prepare)


def add_plot_command(commands: Commands) -> None:
    plot = commands.add_parser("plot", help="draw a run's loss curves to a PNG")
    plot.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    plot.add_argument(
        "--out", type=image_path, help="a .png, .pdf or .svg file (default: RUN_DIR/loss.png)"
    )
    plot.set_defaults(handler=run_plot)


def run_presets(args: argparse.Namespace) -> int:
    width = max(map(len, PRESETS))
    for name in PRESETS:
        print(f"{name:<{width}}  {describe_preset(name)}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from tinygpt.loggers import open_loggers, require_logger_package
    from tinygpt.train.start import resume_run, start_run
    from tinygpt.train.stopping import raise_interrupt_on_sigterm

    raise_interrupt_on_sigterm()  # a `kill` before training starts unwinds like Ctrl-C
    overrides = field_overrides(args)
    if args.resume:
        if args.preset or args.config or args.out or args.init_from:
            raise ConfigError(
                "--resume continues a run as it was; drop --preset/--config/--out/--init-from"
            )
        if "epochs" in given_field_names(overrides):
            raise ConfigError(
                "epochs turns into max_iters when a run starts; to train a resumed run "
                "longer, give --max_iters"
            )
        trainer = resume_run(args.resume, overrides)
    else:
        if args.out is None:
            raise ConfigError("give --out RUN_DIR for the new run (or --resume RUN_DIR)")
        config = resolve_train_config(args.preset, args.config, overrides)
        require_logger_package(config.train.logger)  # before the run's directory is made
        if args.init_from:
            trainer = _start_from_weights(args, config, overrides)
        else:
            trainer = start_run(config, args.out)
    _describe_trainer(trainer)
    result = trainer.fit(observers=open_loggers(trainer))
    if not trainer.context.is_main:  # under torchrun, rank 0 speaks for all
        return 130 if result.stop_reason == "interrupted" else 0
    if result.stop_reason == "interrupted":
        print(
            f"stopped at step {result.step}; resume with: tinygpt train --resume {result.run_dir}"
        )
        return 130
    print(
        f"finished at step {result.step} ({result.stop_reason}); best val loss "
        f"{result.best_val_loss:.4f}; sample with: tinygpt sample {result.run_dir}"
    )
    return 0


def _start_from_weights(
    args: argparse.Namespace, recipe: RunConfig, overrides: dict[str, Any]
) -> Any:
    from tinygpt.train.init_from import start_run_from

    given = given_settings(args.config, overrides)
    return start_run_from(_init_source(args.init_from), recipe, given, args.out)


def _init_source(path: Path) -> Any:
    """A tinygpt run's best checkpoint, or a transformers model directory, as an InitSource."""
    from tinygpt.export.hf_import import read_hf_model
    from tinygpt.run.directory import RUN_FILE
    from tinygpt.run.load import checkpoint_identity, load_model_from_run
    from tinygpt.train.init_from import InitSource

    if (path / RUN_FILE).is_file():
        model, tokenizer, config = load_model_from_run(path, "best")
        return InitSource(path, config, model, tokenizer, checkpoint_identity(path, "best"))
    if (path / "config.json").is_file():
        hf = read_hf_model(path)
        identity = {"hf_model": str(hf.source), "model_class": hf.model_class}
        return InitSource(path, hf.config, hf.model, hf.tokenizer, identity)
    raise CheckpointError(
        f"--init-from {path}: not a tinygpt run (no {RUN_FILE}) nor a Hugging Face model "
        "directory (no config.json); give one of them"
    )


def _describe_trainer(trainer: Any) -> None:
    model_config, runtime = trainer.config.model, trainer.runtime
    log.info(
        "%s: %.2fM parameters, %d layers x %d, vocab %d, %.1f MFLOP/token, %s %s, peak %.0f "
        "GFLOP/s",
        trainer.run_dir,
        trainer.model.num_params() / 1e6,
        model_config.n_layer,
        model_config.n_embd,
        model_config.vocab_size,
        trainer.flops_per_token / 1e6,
        runtime.device,
        str(runtime.dtype).removeprefix("torch."),
        trainer.peak_flops / 1e9,
    )


def run_prepare(args: argparse.Namespace) -> int:
    from tinygpt.data.prepare import prepare_dataset

    overrides = {**field_overrides(args), "data.source": args.source}
    config = apply_overrides(RunConfig(), overrides).data
    if (args.out / "meta.json").exists():
        raise ConfigError(f"{args.out} already holds prepared data; choose another --out")
    prepared = prepare_dataset(config, out_dir=args.out)
    print(
        f"{prepared.directory}: {prepared.train_tokens:,} train and {prepared.val_tokens:,} val "
        f"tokens ({prepared.dtype}), vocab {prepared.vocab_size:,}; train with: tinygpt train "
        f"--data {prepared.directory} --out RUN_DIR"
    )
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from tinygpt.eval.loss_curve import plot_loss_curve
    from tinygpt.run.directory import read_run_info
    from tinygpt.run.metrics import read_metrics

    read_run_info(args.run_dir)
    out = args.out or args.run_dir / "loss.png"
    plot_loss_curve(read_metrics(args.run_dir), out, title=str(args.run_dir))
    print(out)
    return 0
