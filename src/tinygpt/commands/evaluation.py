"""`tinygpt eval`, `attention` and `compare`: how good a run is, what it attends to, and
whether a variant beats the baseline."""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING

from tinygpt.commands.arguments import (
    Bounded,
    add_data_flag,
    add_field_flags,
    add_prompt_flags,
    directory_path,
    field_overrides,
    prompt_of,
)
from tinygpt.commands.runs import add_run_flags, load_run

if TYPE_CHECKING:
    from tinygpt.commands.arguments import Commands


def add_eval_command(commands: Commands) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="loss, perplexity, bits/byte over a whole split; BLEU for dialog models",
        usage="tinygpt eval RUN_DIR [--data SOURCE_OR_PREPARED_DIR] [--split val|train] "
        "[--checkpoint best] [--out DIR] [--max-dialogs N] [--batch-size N]",
        description="Score a run on every token of a split (not a sample). Dialog models also "
        "answer every turn of the first --max-dialogs conversations greedily, scored by BLEU "
        "and distinct-1/2. Writes DIR/eval.json and eval.md (default DIR: RUN_DIR/eval).",
    )
    add_run_flags(evaluate)
    evaluate.add_argument(
        "--data", metavar="SOURCE_OR_PREPARED_DIR", help="default: the run's own data"
    )
    evaluate.add_argument("--split", default="val", choices=("val", "train"))
    evaluate.add_argument("--out", type=directory_path, metavar="DIR", help="default: RUN_DIR/eval")
    evaluate.add_argument(
        "--max-dialogs", type=Bounded("--max-dialogs", least=0), default=200, dest="max_dialogs"
    )
    evaluate.add_argument(
        "--batch-size", type=Bounded("--batch-size", least=1), dest="batch_size",
        help="default: the run's batch_size",
    )  # fmt: skip
    evaluate.set_defaults(handler=run_eval)


def add_attention_command(commands: Commands) -> None:
    attention = commands.add_parser(
        "attention",
        help="draw attention maps of a prompt, per layer and head, to PNGs",
        usage="tinygpt attention RUN_DIR (--prompt TEXT | --prompt-file PATH) [--out DIR] "
        "[--layers all|0,2] [--checkpoint best]",
    )
    add_run_flags(attention)
    add_prompt_flags(attention, "the text whose attention to draw", required=True)
    attention.add_argument(
        "--out", type=directory_path, metavar="DIR", help="default: RUN_DIR/attention"
    )
    attention.add_argument("--layers", default="all", help="all, or indices such as 0,2")
    attention.set_defaults(handler=run_attention)


def add_compare_command(commands: Commands) -> None:
    compare = commands.add_parser(
        "compare",
        help="train configs on equal data and compute, over seeds, and tabulate val loss",
        usage="tinygpt compare CONFIG [CONFIG ...] --out DIR [--seeds N] "
        "(--tokens N | --minutes M) [--data PATH_OR_URL] [--FIELD VALUE ...]",
        description="Does a variant beat the baseline (the first CONFIG)? Each CONFIG (a preset "
        "name, or a TOML file of fields whose top-level `preset = NAME` picks its preset) trains "
        "once per seed for the same budget; --FIELD flags apply to every config. Writes "
        "DIR/compare.md, compare.json and val_curves.png; finished runs in DIR/runs are reused, "
        "interrupted ones resumed.",
    )
    compare.add_argument(
        "configs", nargs="+", metavar="CONFIG", help="preset name or TOML file; first: baseline"
    )
    compare.add_argument(
        "--out", type=directory_path, required=True, metavar="DIR",
        help="folder of the runs and reports",
    )  # fmt: skip
    compare.add_argument(
        "--seeds", type=Bounded("--seeds", least=1), default=3, metavar="N", help="runs per config"
    )
    compare.add_argument(
        "--tokens", type=Bounded("--tokens", above=0), metavar="N",
        help="training tokens per run (1e6 works)",
    )  # fmt: skip
    compare.add_argument(
        "--minutes", type=Bounded("--minutes", float, above=0), metavar="M",
        help="minutes of training steps per run",
    )  # fmt: skip
    add_data_flag(compare, "text to train on, for every config")
    add_field_flags(compare)
    compare.set_defaults(handler=run_compare)


def run_eval(args: argparse.Namespace) -> int:
    from tinygpt.directories import check_output_dir
    from tinygpt.eval.evaluate import evaluate_run
    from tinygpt.eval.report import REPORT_FILES, write_report

    out = args.out or args.run_dir / "eval"
    check_output_dir(out, REPORT_FILES)  # before the evaluation, not after
    model, tokenizer, config, device = load_run(args)
    report = evaluate_run(
        model,
        tokenizer,
        config,
        args.run_dir,
        checkpoint=args.checkpoint,
        source=args.data,
        split=args.split,
        batch_size=args.batch_size,
        max_dialogs=args.max_dialogs,
        device=device,
    )
    json_path, markdown_path = write_report(report, out)
    print(report.to_markdown())
    print(f"wrote {json_path} and {markdown_path}")
    return 0


def run_attention(args: argparse.Namespace) -> int:
    from tinygpt.directories import check_output_dir
    from tinygpt.eval.attention_maps import MAP_FILES, parse_layers, write_attention_maps

    prompt = prompt_of(args)
    out = args.out or args.run_dir / "attention"
    check_output_dir(out, MAP_FILES)  # before the model is loaded
    model, tokenizer, config, _ = load_run(args)
    layers = parse_layers(args.layers, config.model.n_layer)
    for path in write_attention_maps(model, tokenizer, prompt, out, layers):
        print(path)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from tinygpt.compare.budget import Budget
    from tinygpt.compare.runner import CompareInterrupted, run_comparison

    budget = Budget(tokens=args.tokens, minutes=args.minutes)
    command = _compare_command(args)
    try:
        comparison = run_comparison(
            args.configs, field_overrides(args), args.out, args.seeds, budget, command
        )
    except CompareInterrupted as stop:
        print(f"{stop}; its checkpoint is saved, continue with: {command}")
        return 130
    print(comparison.to_markdown())
    print(f"\n{comparison.summary_line()}")
    print(f"wrote {args.out / 'compare.md'}, compare.json and val_curves.png")
    return 0


def _compare_command(args: argparse.Namespace) -> str:
    """The command line that reproduces (or continues) this comparison."""
    words = ["tinygpt", "compare", *args.configs, "--out", str(args.out)]
    words += ["--seeds", str(args.seeds)]
    words += ["--tokens", str(args.tokens)] if args.tokens is not None else []
    words += ["--minutes", str(args.minutes)] if args.minutes is not None else []
    for key, value in field_overrides(args).items():
        flag = "--data" if key == "data.source" else "--" + key.rpartition(".")[2]
        words += [flag, str(value)]
    return shlex.join(words)
