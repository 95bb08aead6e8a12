"""The `tinygpt` command. The only module that writes to stdout; every user error ends here as
one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import errno
import functools
import importlib.metadata
import inspect
import logging
import os
import re
import shlex
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from tinygpt.config import (
    DecodingPrecision,
    RunConfig,
    all_fields,
    apply_given_settings,
    apply_overrides,
    check_given_settings,
    check_seed,
    given_field_names,
    load_toml_overrides,
    parse_value,
    section_classes,
)
from tinygpt.errors import ConfigError, TinyGPTError
from tinygpt.presets import DEFAULT_PRESET, PRESETS, describe_preset, get_preset

if TYPE_CHECKING:  # the handlers import torch-heavy modules only when they run
    import torch

    from tinygpt.generate.engine import GenerationSettings
    from tinygpt.model.gpt import GPT
    from tinygpt.tokenizers.base import Tokenizer

log = logging.getLogger("tinygpt")

# OSErrors about a path or address the user gave (missing, of the wrong kind, not allowed, in
# use): theirs to fix, exit 2 like any mistake. The others (a full disk, an I/O error) are the
# machine's: exit 1.
USER_FIXABLE_ERRNOS = {
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.EACCES,
    errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP, errno.EADDRINUSE,
    errno.EADDRNOTAVAIL,
}  # fmt: skip
# the exit status of a process that SIGPIPE ended (128 + 13), which shells report for `cat`
EXIT_READER_GONE = 141
SPELLING_NOTE = "Every flag may be written with - or _ between words (--max-new-tokens or "
SPELLING_NOTE += "--max_new_tokens)."


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as TinyGPTError: one line, exit 2, like every other error.

    Abbreviated flags are off: with both spellings of every flag, `--repetition` would match
    two names, and a prefix that works today breaks when a flag is added."""

    subcommands: dict[str, argparse.ArgumentParser]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        _configure_logging()
        code = args.handler(args)
        sys.stdout.flush()  # a reader gone shows here, not at exit as "Exception ignored"
        return code
    except TinyGPTError as err:
        return _fail(str(err), 2)
    except KeyboardInterrupt:
        print("tinygpt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _stop_writing_to_a_closed_pipe()
    except OSError as err:  # a wrong path, a full disk: not a bug, still one line
        return _fail(str(err), 2 if err.errno in USER_FIXABLE_ERRNOS else 1)
    except (MemoryError, RuntimeError) as err:
        if (reason := _allocation_failure(err)) is None:
            raise
        return _fail(f"out of memory: {reason}; make the model or batch_size smaller", 2)


def _fail(message: str, code: int) -> int:
    print(f"tinygpt: error: {message}", file=sys.stderr)
    return code


def _stop_writing_to_a_closed_pipe() -> int:
    """`tinygpt sample RUN | head`: the reader left, so stop quietly, as `cat` does (with 141,
    the status a shell shows for a process SIGPIPE ended). Python ignores SIGPIPE and raises
    instead; stdout is pointed at /dev/null so the final flush at exit cannot raise again."""
    with contextlib.suppress(OSError, ValueError):  # ValueError: stdout is not a file (tests)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_READER_GONE


def _allocation_failure(err: BaseException) -> str | None:
    """What could not be allocated, if `err` is an allocation failure (torch's CPU allocator
    and CUDA raise RuntimeErrors that say so); else None. The shape check before building a
    model catches most of these; this catches the rest (a batch too big, memory taken since)."""
    if isinstance(err, MemoryError):
        return str(err) or "a Python object"
    message = str(err)
    cpu = re.search(r"can't allocate memory: you tried to allocate (\d+) bytes", message)
    if cpu:
        return f"{int(cpu.group(1)) / 2**30:,.1f} GiB asked of the CPU allocator"
    if "out of memory" in message.lower():
        return message.splitlines()[0]
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line; an unknown flag gets the closest known one in its error."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        raise ConfigError(_unrecognized(parser.subcommands[args.command], extras))
    return args


def _unrecognized(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    flags = [word.partition("=")[0] for word in extras if word.startswith("-")]
    if not flags:
        return f"unrecognized arguments: {' '.join(extras)} (see `{parser.prog} --help`)"
    known = [name for name in parser._option_string_actions if name.startswith("--")]
    closest = difflib.get_close_matches(flags[0], known, n=1)
    suggestion = f"; did you mean {closest[0]}?" if closest else ""
    return f"unrecognized flag {flags[0]}{suggestion} (see `{parser.prog} --help`)"


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tinygpt",
        description="Train, sample and inspect small GPT models.",
        epilog=SPELLING_NOTE,
    )
    parser.add_argument("--version", action="version", version=f"tinygpt {_package_version()}")
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
    _add_prompt_flags(sample, "text to continue (default: the run's sample.prompt)")
    sample.add_argument(
        "--max-new-tokens", type=_Bounded("--max-new-tokens", least=0), dest="max_new_tokens"
    )
    _add_sampling_flags(sample)
    sample.add_argument(
        "--seed",
        type=_seed("--seed"),
        dest="sample_seed",
        metavar="SEED",
        help="same seed, same text; by default the run's sample_seed (1337 unless set when "
        "training), so every call prints the same text: give another seed for another",
    )
    sample.add_argument(
        "--repetition-penalty", type=_Bounded("--repetition-penalty", float, above=0),
        default=1.0, help="> 1 discourages repeats (CTRL)",
    )  # fmt: skip
    sample.add_argument(
        "--min-new-tokens", type=_Bounded("--min-new-tokens", least=0), default=0,
        help="no end-of-text before",
    )  # fmt: skip
    sample.add_argument("--stop", action="append", default=[], help="stop at this text (repeat)")
    sample.add_argument(
        "--num-samples", type=_Bounded("--num-samples", least=1), default=1,
        help="continuations of the prompt, as one batch",
    )  # fmt: skip
    sample.add_argument(
        "--num-beams", type=_Bounded("--num-beams", least=1), default=1, help="> 1: beam search"
    )
    sample.add_argument(
        "--length-penalty", type=_Bounded("--length-penalty", float), default=1.0,
        help="beam search",
    )  # fmt: skip
    sample.set_defaults(handler=run_sample)

    chat = commands.add_parser(
        "chat",
        help="talk with a run trained on dialog data, in the terminal",
        description="Chat in the terminal; the history is kept within the model's context, "
        "oldest turns dropped first. Commands: /reset, /temp T, /top_k K, /top_p P, "
        "/max_tokens N, /help, /quit (or Ctrl-D). Ctrl-C stops a reply as it streams, and at "
        "the prompt clears the line.",
    )
    _add_run_flags(chat)
    chat.add_argument(
        "--max-new-tokens",
        type=_Bounded("--max-new-tokens", least=1),
        dest="max_new_tokens",
        help="tokens per reply (default: half the context)",
    )
    _add_sampling_flags(chat)
    chat.add_argument(
        "--seed", type=_seed("--seed"), help="same seed, same replies (default: a new one)"
    )
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
    serve.add_argument(
        "--port", type=_Bounded("--port", least=0, most=65535), default=8000, help="0: any free"
    )
    serve.add_argument(
        "--model-name", dest="model_name", help="the model id clients use (default: RUN_DIR's name)"
    )
    serve.add_argument(
        "--max-batch",
        type=_Bounded("--max-batch", least=1),
        default=8,
        dest="max_batch",
        help="requests decoded together; more wait their turn (1: one at a time)",
    )
    _add_precision_flag(serve)
    serve.set_defaults(handler=run_serve)

    plot = commands.add_parser("plot", help="draw a run's loss curves to a PNG")
    plot.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    plot.add_argument(
        "--out", type=_image_path, help="a .png, .pdf or .svg file (default: RUN_DIR/loss.png)"
    )
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
    evaluate.add_argument(
        "--out", type=_directory_path, metavar="DIR", help="default: RUN_DIR/eval"
    )
    evaluate.add_argument(
        "--max-dialogs", type=_Bounded("--max-dialogs", least=0), default=200, dest="max_dialogs"
    )
    evaluate.add_argument(
        "--batch-size", type=_Bounded("--batch-size", least=1), dest="batch_size",
        help="default: the run's batch_size",
    )  # fmt: skip
    evaluate.set_defaults(handler=run_eval)

    attention = commands.add_parser(
        "attention",
        help="draw attention maps of a prompt, per layer and head, to PNGs",
        usage="tinygpt attention RUN_DIR (--prompt TEXT | --prompt-file PATH) [--out DIR] "
        "[--layers all|0,2] [--checkpoint best]",
    )
    _add_run_flags(attention)
    _add_prompt_flags(attention, "the text whose attention to draw", required=True)
    attention.add_argument(
        "--out", type=_directory_path, metavar="DIR", help="default: RUN_DIR/attention"
    )
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
        "--out", type=_directory_path, required=True, metavar="DIR",
        help="folder of the runs and reports",
    )  # fmt: skip
    compare.add_argument(
        "--seeds", type=_Bounded("--seeds", least=1), default=3, metavar="N", help="runs per config"
    )
    compare.add_argument(
        "--tokens", type=_Bounded("--tokens", above=0), metavar="N",
        help="training tokens per run (1e6 works)",
    )  # fmt: skip
    compare.add_argument(
        "--minutes", type=_Bounded("--minutes", float, above=0), metavar="M",
        help="minutes of training steps per run",
    )  # fmt: skip
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
        "--lora-targets, everything else frozen: a target takes every module whose name ends with "
        "the target's dot-separated parts (blocks.N.attn.qkv, attn.proj, mlp.fc, mlp.proj, "
        "lm_head; a bare proj is both attn.proj and mlp.proj), and the adapted modules are "
        "listed. SOURCE is tokenized with RUN_DIR's tokenizer. NEW_RUN_DIR gets the merged model "
        "as a normal run (sample, eval, export) and the adapter alone in NEW_RUN_DIR/adapter, in "
        "peft's layout for RUN_DIR's `tinygpt export`. Training fields (--max_iters, "
        "--learning_rate, ...) default to RUN_DIR's, except that the learning rate decays over "
        "this run's max_iters unless --lr_decay_iters is given, and the warm-up is at most a "
        "tenth of max_iters unless --warmup_iters is given.",
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
    parser.subcommands = commands.choices
    for subcommand in parser.subcommands.values():
        _accept_both_spellings(subcommand)
    return parser


def _package_version() -> str:
    try:
        return importlib.metadata.version("tinygpt")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


def _accept_both_spellings(parser: argparse.ArgumentParser) -> None:
    """Let every flag be written with - or _ between words: train's config fields carry
    nanoGPT's underscores, the other flags hyphens, and people mix them. The other spelling is
    registered beside the one --help shows, so the help stays as it was."""
    parser.epilog = SPELLING_NOTE
    for action in parser._actions:
        for flag in action.option_strings:
            parser._option_string_actions.setdefault(other_spelling(flag), action)


def other_spelling(flag: str) -> str:
    """`--max-new-tokens` <-> `--max_new_tokens`; `--model.n_layer` -> `--model.n-layer`."""
    if not flag.startswith("--"):
        return flag
    name = flag[2:]
    return "--" + (name.replace("_", "-") if "_" in name else name.replace("-", "_"))


@dataclass(frozen=True)
class _Bounded:
    """argparse's `type=` for a number flag: parsed like a config field (1e3 is a whole number,
    nan and inf are refused), then held to its bounds; each failure is one line naming the
    flag, in the words of the library's own checks (`--seeds 0 must be at least 1`)."""

    flag: str
    kind: type = int
    least: float | None = None
    above: float | None = None
    most: float | None = None

    def __call__(self, text: str) -> Any:
        value = parse_value(self.flag, self.kind, text)
        if self.least is not None and value < self.least:
            self._refuse(text, f"at least {self.least:g}")
        if self.above is not None and value <= self.above:
            self._refuse(text, f"greater than {self.above:g}")
        if self.most is not None and value > self.most:
            self._refuse(text, f"at most {self.most:g}")
        return value

    def _refuse(self, text: str, bound: str) -> NoReturn:
        raise ConfigError(f"{self.flag} {text} must be {bound}")


def _seed(flag: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        seed = parse_value(flag, int, text)
        check_seed(seed, f"{flag} {text}")
        return seed

    return parse


def _directory_path(text: str) -> Path:
    """An --out DIR: it may not exist yet, but must not be a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {text} is a file; give a directory (it is created if missing)")
    return path


# what the loss curve can be written as; matplotlib knows more, but these three are certain
IMAGE_SUFFIXES = (".png", ".pdf", ".svg")


def _image_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f"--out {text}: give a file name ending in .png, .pdf or .svg")
    if path.is_dir():
        raise ConfigError(f"--out {text} is a directory; give a file such as {path / 'loss.png'}")
    return path


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
    parser.add_argument(
        "--temperature", type=_Bounded("--temperature", float, least=0),
        help="0 for greedy decoding",
    )  # fmt: skip
    parser.add_argument(
        "--top-k", type=_Bounded("--top-k", least=0), dest="top_k", help="0 for no top-k filter"
    )
    parser.add_argument(
        "--top-p", type=_Bounded("--top-p", float, above=0, most=1), dest="top_p",
        help="1.0 for no nucleus filter",
    )  # fmt: skip
    _add_precision_flag(parser)


def _add_prompt_flags(
    parser: argparse.ArgumentParser, help_text: str, required: bool = False
) -> None:
    """--prompt TEXT or --prompt-file PATH (- for stdin): a long prompt need not be quoted."""
    prompts = parser.add_mutually_exclusive_group(required=required)
    prompts.add_argument("--prompt", help=help_text)
    prompts.add_argument(
        "--prompt-file", dest="prompt_file", metavar="PATH",
        help="read the prompt from PATH, exactly as written (a final newline included); - reads "
        "stdin",
    )  # fmt: skip


def _prompt_of(args: argparse.Namespace) -> str | None:
    """--prompt's text, or --prompt-file's; None when neither was given."""
    if args.prompt_file is None:
        return args.prompt
    try:
        if args.prompt_file == "-":
            return sys.stdin.read()
        return Path(args.prompt_file).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--prompt-file {args.prompt_file} is not UTF-8 text") from None
    except OSError as err:
        raise ConfigError(
            f"--prompt-file {args.prompt_file} cannot be read: {err.strerror}"
        ) from None


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
    help_texts, fields = _field_comments(), all_fields()
    for section, cls in section_classes().items():
        if section not in sections:
            continue
        group = parser.add_argument_group(f"{section} fields ({cls.__doc__})")
        defaults = cls()
        for name, (field_section, annotation, _) in fields.items():
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


@functools.cache  # reading config.py's source took most of the time `tinygpt` takes to start
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
    """The preset, then the --config file, then the flags: what a person gave wins over the
    preset (see `apply_given_settings`), and given settings that contradict each other are
    refused."""
    config = get_preset(preset or DEFAULT_PRESET)
    given: set[str] = set()
    if config_file is not None:
        from_file = load_toml_overrides(config_file)
        config = apply_given_settings(config, from_file, f"config file {config_file}")
        given |= given_field_names(from_file)
    config = apply_given_settings(config, overrides, "the flags")
    check_given_settings(config, given | given_field_names(overrides))
    return config


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

    args.prompt = _prompt_of(args)
    model, tokenizer, config, _ = _load_run(args)
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

    model, tokenizer, config, _ = _load_run(args)
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


def _load_run(args: argparse.Namespace) -> tuple[GPT, Tokenizer, RunConfig, torch.device]:
    """RUN_DIR's --checkpoint on --device (its shape checked against free memory first)."""
    from tinygpt.runtime import resolve_device
    from tinygpt.train.checkpoint import load_model_from_run

    device = resolve_device(args.device)
    model, tokenizer, config = load_model_from_run(args.run_dir, args.checkpoint, device)
    return model, tokenizer, config, device


def run_serve(args: argparse.Namespace) -> int:
    from tinygpt.serve.app import bind_socket, create_app, make_server, url_of

    model, tokenizer, config, _ = _load_run(args)
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
        f"--data {prepared.directory} --out RUN_DIR"
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

    out = args.out or args.run_dir / "eval"
    check_output_dir(out, REPORT_FILES)  # before the evaluation, not after
    model, tokenizer, config, device = _load_run(args)
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

    prompt = _prompt_of(args)
    out = args.out or args.run_dir / "attention"
    check_output_dir(out, MAP_FILES)  # before the model is loaded
    model, tokenizer, config, _ = _load_run(args)
    layers = parse_layers(args.layers, config.model.n_layer)
    for path in write_attention_maps(model, tokenizer, prompt, out, layers):
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
