"""The `tinygpt` command. The only module that writes to stdout; every user error ends here as
one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import re
import shlex
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from tinygpt.config import (
    DecodingPrecision,
    RunConfig,
    all_fields,
    apply_overrides,
    load_toml_overrides,
    parse_value,
    section_classes,
)
from tinygpt.errors import ConfigError, TinyGPTError
from tinygpt.presets import DEFAULT_PRESET, PRESETS, describe_preset, get_preset

if TYPE_CHECKING:  # the handlers import torch-heavy modules only when they run
    from tinygpt.generate.engine import GenerationSettings
    from tinygpt.model.gpt import GPT
    from tinygpt.tokenizers.base import Tokenizer

log = logging.getLogger("tinygpt")


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as TinyGPTError: one line, exit 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _configure_logging()
        return args.handler(args)
    except TinyGPTError as err:
        print(f"tinygpt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinygpt: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # disk full, permission denied: not a bug, still one line
        print(f"tinygpt: error: {err}", file=sys.stderr)
        return 1


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tinygpt", description="Train, sample and inspect small GPT models.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    presets = commands.add_parser("presets", help="list the named configurations")
    presets.set_defaults(handler=run_presets)

    train = commands.add_parser(
        "train",
        help="train a model (or resume a run)",
        usage="tinygpt train [--preset NAME] [--config FILE] (--out RUN_DIR | --resume RUN_DIR) "
        "[--data PATH_OR_URL] [--FIELD VALUE ...]",
        description="Train a model. Any config field can be set with --FIELD VALUE "
        "(or --SECTION.FIELD VALUE); precedence: defaults < --preset < --config < flags.",
    )
    train.add_argument("--preset", help=f"starting configuration (default {DEFAULT_PRESET})")
    train.add_argument("--config", type=Path, help="a TOML file of fields, by section")
    train.add_argument("--out", type=Path, help="the new run directory")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run")
    _add_data_flag(train, "text to train on (default: TinyShakespeare)")
    _add_field_flags(train)
    train.set_defaults(handler=run_train)

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
    _add_field_flags(prepare, sections=("data",))
    prepare.set_defaults(handler=run_prepare)

    sample = commands.add_parser("sample", help="generate text from a trained run")
    _add_run_flags(sample)
    sample.add_argument("--prompt", help="text to continue (default: the run's sample.prompt)")
    sample.add_argument("--max-new-tokens", type=int, dest="max_new_tokens")
    _add_sampling_flags(sample)
    sample.add_argument("--seed", type=int, dest="sample_seed")
    sample.add_argument(
        "--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (CTRL)"
    )
    sample.add_argument("--min-new-tokens", type=int, default=0, help="no end-of-text before")
    sample.add_argument("--stop", action="append", default=[], help="stop at this text (repeat)")
    sample.add_argument(
        "--num-samples", type=int, default=1, help="continuations of the prompt, as one batch"
    )
    sample.add_argument("--num-beams", type=int, default=1, help="> 1: beam search")
    sample.add_argument("--length-penalty", type=float, default=1.0, help="beam search")
    sample.set_defaults(handler=run_sample)

    chat = commands.add_parser(
        "chat",
        help="talk with a run trained on dialog data, in the terminal",
        description="Chat in the terminal; the history is kept within the model's context, "
        "oldest turns dropped first. Commands: /reset, /temp T, /top_k K, /top_p P, "
        "/max_tokens N, /help, /quit (or Ctrl-D).",
    )
    _add_run_flags(chat)
    chat.add_argument(
        "--max-new-tokens",
        type=int,
        dest="max_new_tokens",
        help="tokens per reply (default: half the context)",
    )
    _add_sampling_flags(chat)
    chat.add_argument("--seed", type=int, help="same seed, same replies")
    chat.set_defaults(handler=run_chat)

    serve = commands.add_parser(
        "serve",
        help="serve a run over an OpenAI-compatible HTTP API, with a chat page",
        description="Serve RUN_DIR at /v1/completions, /v1/chat/completions and /v1/models "
        "(OpenAI's API, streaming included) and a chat page at /.",
    )
    _add_run_flags(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"
    )
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--model-name", dest="model_name", help="the model id clients use (default: RUN_DIR's name)"
    )
    serve.add_argument(
        "--max-batch",
        type=int,
        default=8,
        dest="max_batch",
        help="requests decoded together; more wait their turn (1: one at a time)",
    )
    _add_precision_flag(serve)
    serve.set_defaults(handler=run_serve)

    plot = commands.add_parser("plot", help="draw a run's loss curves to a PNG")
    plot.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    plot.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/loss.png)")
    plot.set_defaults(handler=run_plot)

    evaluate = commands.add_parser(
        "eval",
        help="loss, perplexity, bits/byte over a whole split; BLEU for dialog models",
        usage="tinygpt eval RUN_DIR [--data SOURCE_OR_PREPARED_DIR] [--split val|train] "
        "[--checkpoint best] [--out DIR] [--max-dialogs N] [--batch-size N]",
        description="Score a run on every token of a split (not a sample). Dialog models also "
        "answer every turn of the first --max-dialogs conversations greedily, scored by BLEU "
        "and distinct-1/2. Writes DIR/eval.json and eval.md (default DIR: RUN_DIR/eval).",
    )
    _add_run_flags(evaluate)
    evaluate.add_argument(
        "--data", metavar="SOURCE_OR_PREPARED_DIR", help="default: the run's own data"
    )
    evaluate.add_argument("--split", default="val", choices=("val", "train"))
    evaluate.add_argument("--out", type=Path, metavar="DIR", help="default: RUN_DIR/eval")
    evaluate.add_argument("--max-dialogs", type=int, default=200, dest="max_dialogs")
    evaluate.add_argument(
        "--batch-size", type=int, dest="batch_size", help="default: the run's batch_size"
    )
    evaluate.set_defaults(handler=run_eval)

    attention = commands.add_parser(
        "attention",
        help="draw attention maps of a prompt, per layer and head, to PNGs",
        usage="tinygpt attention RUN_DIR --prompt TEXT [--out DIR] [--layers all|0,2] "
        "[--checkpoint best]",
    )
    _add_run_flags(attention)
    attention.add_argument("--prompt", required=True, help="the text whose attention to draw")
    attention.add_argument("--out", type=Path, metavar="DIR", help="default: RUN_DIR/attention")
    attention.add_argument("--layers", default="all", help="all, or indices such as 0,2")
    attention.set_defaults(handler=run_attention)

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
        "--out", type=Path, required=True, metavar="DIR", help="folder of the runs and reports"
    )
    compare.add_argument("--seeds", type=int, default=3, metavar="N", help="runs per config")
    compare.add_argument(
        "--tokens", type=_whole_number, metavar="N", help="training tokens per run (1e6 works)"
    )
    compare.add_argument(
        "--minutes", type=float, metavar="M", help="minutes of training steps per run"
    )
    _add_data_flag(compare, "text to train on, for every config")
    _add_field_flags(compare)
    compare.set_defaults(handler=run_compare)

    export = commands.add_parser(
        "export",
        help="write a run as a Hugging Face transformers model directory",
        usage="tinygpt export RUN_DIR --format hf --out DIR [--checkpoint best]",
        description="Write RUN_DIR's checkpoint as config.json, model.safetensors and tokenizer "
        "files that transformers' AutoModelForCausalLM and AutoTokenizer load without tinygpt: "
        "the GPT-2 block as GPT2LMHeadModel, the Llama block (rope, rmsnorm, swiglu) as "
        "LlamaForCausalLM.",
    )
    _add_run_flags(export, device=False)
    export.add_argument("--format", default="hf", choices=("hf",), help="hf: Hugging Face")
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new directory")
    export.set_defaults(handler=run_export)

    import_hf = commands.add_parser(
        "import-hf",
        help="turn a Hugging Face GPT-2 or Llama model directory into a run",
        usage="tinygpt import-hf DIR --out RUN_DIR",
        description="Read a GPT2LMHeadModel or LlamaForCausalLM directory (config.json, "
        "safetensors weights, tokenizer) into a new run that sample, eval, chat and finetune use.",
    )
    import_hf.add_argument("hf_dir", type=Path, metavar="DIR")
    import_hf.add_argument("--out", type=Path, required=True, metavar="RUN_DIR")
    import_hf.set_defaults(handler=run_import_hf)

    finetune = commands.add_parser(
        "finetune",
        help="LoRA fine-tune a trained run on new text, into a new run",
        usage="tinygpt finetune RUN_DIR --data SOURCE --out NEW_RUN_DIR [--lora-r 8] "
        "[--lora-alpha 16] [--lora-targets qkv,proj] [--lora-dropout 0.05] [--checkpoint best] "
        "[--FIELD VALUE ...]",
        description="Train low-rank adapters (peft LoRA) on the Linear modules named by "
        "--lora-targets (suffixes of blocks.N.attn.qkv, blocks.N.attn.proj, blocks.N.mlp.fc, "
        "blocks.N.mlp.proj, lm_head), everything else frozen. SOURCE is tokenized with RUN_DIR's "
        "tokenizer. NEW_RUN_DIR gets the merged model as a normal run (sample, eval, export) and "
        "the adapter alone in NEW_RUN_DIR/adapter. Training fields (--max_iters, "
        "--learning_rate, ...) default to RUN_DIR's, except that the learning rate decays over "
        "this run's max_iters unless --lr_decay_iters is given.",
    )
    _add_run_flags(finetune, device=False, run_help="the base run")
    finetune.add_argument(
        "--data",
        dest="data.source",
        default=argparse.SUPPRESS,
        metavar="SOURCE",
        help="text to fine-tune on (any source `train` takes)",
    )
    finetune.add_argument("--out", type=Path, required=True, metavar="NEW_RUN_DIR")
    finetune.add_argument("--lora-r", type=int, default=8, dest="lora_r", help="rank of B A")
    finetune.add_argument(
        "--lora-alpha", type=float, default=16.0, dest="lora_alpha", help="scale alpha / r"
    )
    finetune.add_argument(
        "--lora-targets", default="qkv,proj", dest="lora_targets", help="e.g. qkv,attn.proj,fc"
    )
    finetune.add_argument("--lora-dropout", type=float, default=0.05, dest="lora_dropout")
    _add_field_flags(finetune, sections=("data", "train"))
    finetune.set_defaults(handler=run_finetune)
    return parser


def _whole_number(text: str) -> int:
    return parse_value("--tokens", int, text)


def _add_data_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--data`: a short name for the field data.source."""
    parser.add_argument(
        "--data", dest="data.source", default=argparse.SUPPRESS, metavar="PATH_OR_URL",
        help=help_text,
    )  # fmt: skip


def _add_run_flags(
    parser: argparse.ArgumentParser, device: bool = True, run_help: str | None = None
) -> None:
    """RUN_DIR and which of its checkpoints to load (and onto which device)."""
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help=run_help)
    parser.add_argument("--checkpoint", default="best", help="best, last, or a step-N folder")
    if device:
        parser.add_argument("--device", default="auto")


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """How each token is drawn; unset flags keep the run's sample section."""
    parser.add_argument("--temperature", type=float, help="0 for greedy decoding")
    parser.add_argument("--top-k", type=int, dest="top_k", help="0 for no top-k filter")
    parser.add_argument("--top-p", type=float, dest="top_p", help="1.0 for no nucleus filter")
    _add_precision_flag(parser)


def _add_precision_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=typing.get_args(DecodingPrecision),
        help="weights read while decoding: float16 reads half the bytes (1.4-1.8x faster for "
        "tinystories-small on a CPU) and moves logits by ~1e-2; float32 is exact; auto: "
        "float16 on a CPU when the model's weights exceed 16 MiB (default: the run's "
        "sample.precision)",
    )


def _add_field_flags(
    parser: argparse.ArgumentParser,
    sections: tuple[str, ...] = ("model", "data", "train", "sample"),
) -> None:
    """One flag per config field, `--n_layer` and `--model.n_layer` alike; values stay text
    here and are parsed by the field's type in `apply_overrides`."""
    help_texts = _field_comments()
    for section, cls in section_classes().items():
        if section not in sections:
            continue
        group = parser.add_argument_group(f"{section} fields ({cls.__doc__})")
        defaults = cls()
        for name, (field_section, annotation, _) in all_fields().items():
            if field_section != section:
                continue
            group.add_argument(
                f"--{name}",
                f"--{section}.{name}",
                dest=f"{section}.{name}",
                default=argparse.SUPPRESS,
                metavar=_type_name(annotation),
                help=f"{help_texts.get(name, '')} (default: {getattr(defaults, name)!r})".replace(
                    "%", "%%"
                ),
            )


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return "{" + ",".join(typing.get_args(annotation)) + "}"
    return getattr(annotation, "__name__", str(annotation)).upper()


def _field_comments() -> dict[str, str]:
    """The trailing `# comment` of each field in config.py: the help text, written once."""
    comments: dict[str, str] = {}
    for cls in section_classes().values():
        for line in inspect.getsource(cls).splitlines():
            match = re.match(r"\s+(\w+):[^#]*#\s*(.+)$", line)
            if match:
                comments[match.group(1)] = match.group(2).strip()
    return comments


def _field_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {key: value for key, value in vars(args).items() if "." in key}


# ----------------------------------------------------------------------------------------------
# Commands


def run_presets(args: argparse.Namespace) -> int:
    width = max(map(len, PRESETS))
    for name in PRESETS:
        print(f"{name:<{width}}  {describe_preset(name)}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from tinygpt.train.loop import raise_interrupt_on_sigterm, resume_run, start_run

    raise_interrupt_on_sigterm()  # a `kill` before training starts unwinds like Ctrl-C
    overrides = _field_overrides(args)
    if args.resume:
        if args.preset or args.config or args.out:
            raise ConfigError("--resume continues a run as it was; drop --preset/--config/--out")
        trainer = resume_run(args.resume, overrides)
    else:
        if args.out is None:
            raise ConfigError("give --out RUN_DIR for the new run (or --resume RUN_DIR)")
        config = resolve_train_config(args.preset, args.config, overrides)
        trainer = start_run(config, args.out)
    _describe_trainer(trainer)
    result = trainer.fit()
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


def resolve_train_config(
    preset: str | None, config_file: Path | None, overrides: dict[str, Any]
) -> RunConfig:
    config = get_preset(preset or DEFAULT_PRESET)
    if config_file is not None:
        config = apply_overrides(config, load_toml_overrides(config_file))
    return apply_overrides(config, overrides)


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


# `tinygpt sample` flags that override the run's sample section
SAMPLE_FLAGS = (
    "prompt", "max_new_tokens", "temperature", "top_k", "top_p", "sample_seed", "precision"
)  # fmt: skip


def run_sample(args: argparse.Namespace) -> int:
    from tinygpt.generate.engine import GenerationSettings, stream_text
    from tinygpt.runtime import resolve_device
    from tinygpt.train.checkpoint import load_model_from_run

    device = resolve_device(args.device)
    model, tokenizer, config = load_model_from_run(args.run_dir, args.checkpoint, device)
    chosen = {name: value for name in SAMPLE_FLAGS if (value := getattr(args, name)) is not None}
    sample = dataclasses.replace(config.sample, **chosen)  # validated like any config value
    settings = GenerationSettings(
        max_new_tokens=sample.max_new_tokens,
        min_new_tokens=args.min_new_tokens,
        temperature=sample.temperature,
        top_k=sample.top_k,
        top_p=sample.top_p,
        repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop),
        seed=sample.sample_seed,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        precision=sample.precision,
    )
    if args.num_samples != 1:
        return _print_samples(model, tokenizer, sample.prompt, settings, args.num_samples)
    pieces = stream_text(model, tokenizer, sample.prompt, settings)
    first = next(pieces, "")  # encode the prompt (and refuse a bad one) before printing it
    sys.stdout.write(sample.prompt + first)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _print_samples(
    model: GPT, tokenizer: Tokenizer, prompt: str, settings: GenerationSettings, count: int
) -> int:
    """`count` continuations drawn as one batch (nanoGPT's num_samples), separated by a rule."""
    from tinygpt.generate.engine import generate_batch

    if count < 1:
        raise ConfigError(f"--num-samples {count}: give 1 or more")
    if settings.num_beams > 1:
        raise ConfigError("beam search finds one continuation; drop --num-samples or --num-beams")
    for index, completion in enumerate(
        generate_batch(model, tokenizer, [prompt] * count, settings)
    ):
        if index:
            print("---------------")
        print(prompt + completion.text)
    return 0


def run_chat(args: argparse.Namespace) -> int:
    from tinygpt.generate.chat import HELP, ChatSession, run_terminal_chat
    from tinygpt.generate.engine import GenerationSettings
    from tinygpt.runtime import resolve_device
    from tinygpt.train.checkpoint import load_model_from_run

    device = resolve_device(args.device)
    model, tokenizer, config = load_model_from_run(args.run_dir, args.checkpoint, device)
    sample, block_size = config.sample, config.model.block_size
    default_tokens = max(1, min(sample.max_new_tokens, block_size // 2))
    settings = GenerationSettings(
        max_new_tokens=_chosen(args.max_new_tokens, default_tokens),
        temperature=_chosen(args.temperature, sample.temperature),
        top_k=_chosen(args.top_k, sample.top_k),
        top_p=_chosen(args.top_p, sample.top_p),
        seed=args.seed,
        precision=_chosen(args.precision, sample.precision),
    )
    session = ChatSession(model, tokenizer, settings)
    if config.data.format != "dialog":
        transcript = "" if session.format.is_dialog else " (prompts are User:/Bot: lines)"
        print(
            f"tinygpt: warning: {args.run_dir} was trained on plain text, not the dialog format; "
            f"its replies may not read like a chat{transcript}",
            file=sys.stderr,
        )
    print(f"chatting with {args.run_dir} ({block_size}-token context). {HELP}")
    return run_terminal_chat(session, sys.stdin, sys.stdout)


def _chosen(value: Any, default: Any) -> Any:
    return default if value is None else value


def run_serve(args: argparse.Namespace) -> int:
    import contextlib

    from tinygpt.runtime import resolve_device
    from tinygpt.serve.app import bind_socket, create_app, make_server, url_of
    from tinygpt.train.checkpoint import load_model_from_run

    if args.max_batch < 1:
        raise ConfigError(f"--max-batch {args.max_batch}: give 1 or more")
    device = resolve_device(args.device)
    model, tokenizer, config = load_model_from_run(args.run_dir, args.checkpoint, device)
    if args.precision is not None:
        config = dataclasses.replace(
            config, sample=dataclasses.replace(config.sample, precision=args.precision)
        )
    name = args.model_name or args.run_dir.resolve().name
    sock = bind_socket(args.host, args.port)
    url = url_of(sock)
    print(f"serving {name} at {url}/ (OpenAI API base_url {url}/v1); Ctrl-C stops", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops cleanly, then re-raises Ctrl-C
        app = create_app(model, tokenizer, config, name, max_batch=args.max_batch)
        make_server(app).run(sockets=[sock])
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from tinygpt.data.prepare import prepare_dataset

    overrides = {**_field_overrides(args), "data.source": args.source}
    config = apply_overrides(RunConfig(), overrides).data
    if (args.out / "meta.json").exists():
        raise ConfigError(f"{args.out} already holds prepared data; choose another --out")
    prepared = prepare_dataset(config, out_dir=args.out)
    print(
        f"{prepared.directory}: {prepared.train_tokens:,} train and {prepared.val_tokens:,} val "
        f"tokens ({prepared.dtype}), vocab {prepared.vocab_size:,}; train with: tinygpt train "
        f"--data {prepared.directory} --tokenizer {config.tokenizer} --out RUN_DIR"
    )
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from tinygpt.eval.loss_curve import plot_loss_curve
    from tinygpt.train.checkpoint import read_run_info
    from tinygpt.train.loop import read_metrics

    read_run_info(args.run_dir)
    out = args.out or args.run_dir / "loss.png"
    plot_loss_curve(read_metrics(args.run_dir), out, title=str(args.run_dir))
    print(out)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from tinygpt.directories import check_output_dir
    from tinygpt.eval.evaluate import REPORT_FILES, evaluate_run, write_report
    from tinygpt.runtime import resolve_device
    from tinygpt.train.checkpoint import load_model_from_run

    out = args.out or args.run_dir / "eval"
    check_output_dir(out, REPORT_FILES)  # before the evaluation, not after
    device = resolve_device(args.device)
    model, tokenizer, config = load_model_from_run(args.run_dir, args.checkpoint, device)
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
    from tinygpt.runtime import resolve_device
    from tinygpt.train.checkpoint import load_model_from_run

    out = args.out or args.run_dir / "attention"
    check_output_dir(out, MAP_FILES)  # before the model is loaded
    device = resolve_device(args.device)
    model, tokenizer, config = load_model_from_run(args.run_dir, args.checkpoint, device)
    layers = parse_layers(args.layers, config.model.n_layer)
    for path in write_attention_maps(model, tokenizer, args.prompt, out, layers):
        print(path)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from tinygpt.eval.compare import Budget, CompareInterrupted, run_comparison

    budget = Budget(tokens=args.tokens, minutes=args.minutes)
    command = _compare_command(args)
    try:
        comparison = run_comparison(
            args.configs, _field_overrides(args), args.out, args.seeds, budget, command
        )
    except CompareInterrupted as stop:
        print(f"{stop}; its checkpoint is saved, continue with: {command}")
        return 130
    print(comparison.to_markdown())
    print(f"\n{comparison.summary_line()}")
    print(f"wrote {args.out / 'compare.md'}, compare.json and val_curves.png")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from tinygpt.export.hf import export_hf

    result = export_hf(args.run_dir, args.out, args.checkpoint)
    print(
        f"wrote {result.directory}: {result.model_class} with a {result.tokenizer_kind} "
        f"tokenizer; load it with transformers.AutoModelForCausalLM.from_pretrained and "
        f"AutoTokenizer.from_pretrained"
    )
    return 0


def run_import_hf(args: argparse.Namespace) -> int:
    from tinygpt.export.hf import import_hf

    result = import_hf(args.hf_dir, args.out)
    print(
        f"wrote {result.run_dir}: {result.model_class} as a run with a {result.tokenizer_kind} "
        f"tokenizer; try: tinygpt sample {result.run_dir}"
    )
    return 0


def _compare_command(args: argparse.Namespace) -> str:
    """The command line that reproduces (or continues) this comparison."""
    words = ["tinygpt", "compare", *args.configs, "--out", str(args.out)]
    words += ["--seeds", str(args.seeds)]
    words += ["--tokens", str(args.tokens)] if args.tokens is not None else []
    words += ["--minutes", str(args.minutes)] if args.minutes is not None else []
    for key, value in _field_overrides(args).items():
        flag = "--data" if key == "data.source" else "--" + key.rpartition(".")[2]
        words += [flag, str(value)]
    return shlex.join(words)


def run_finetune(args: argparse.Namespace) -> int:
    from tinygpt.finetune.loop import start_finetune  # torch and peft only when needed
    from tinygpt.finetune.lora import LoraSettings, parse_targets

    overrides = _field_overrides(args)
    source = overrides.pop("data.source", None)
    if source is None:
        raise ConfigError("give --data SOURCE, the text to fine-tune on")
    settings = LoraSettings(
        r=args.lora_r,
        alpha=args.lora_alpha,
        targets=parse_targets(args.lora_targets),
        dropout=args.lora_dropout,
    )
    finetuner = start_finetune(
        args.run_dir, args.out, source, settings, overrides, checkpoint=args.checkpoint
    )
    print(finetuner.parameter_summary(), flush=True)
    result = finetuner.fit()
    if result.stop_reason == "interrupted":
        print(f"stopped at step {result.step}; the merged model so far is in {result.run_dir}")
        return 130
    print(
        f"finished at step {result.step} ({result.stop_reason}); best val loss "
        f"{result.best_val_loss:.4f}; adapter in {result.run_dir / 'adapter'}; sample with: "
        f"tinygpt sample {result.run_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
