"""Flags several commands share, and the argparse types that parse them like config values:
each mistake is one line naming the flag."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from tinygpt.config import DecodingPrecision, check_seed
from tinygpt.config_parsing import all_fields, field_help, parse_value, section_classes
from tinygpt.errors import ConfigError

if TYPE_CHECKING:
    # what `add_subparsers` returns: each command module adds its parsers to it
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]

SPELLING_NOTE = "Every flag may be written with - or _ between words (--max-new-tokens or "
SPELLING_NOTE += "--max_new_tokens)."
# what the loss curve can be written as; matplotlib knows more, but these three are certain
IMAGE_SUFFIXES = (".png", ".pdf", ".svg")


class Parser(argparse.ArgumentParser):
    """argparse that reports mistakes as TinyGPTError: one line, exit 2, like every other error.

    Abbreviated flags are off: with both spellings of every flag, `--repetition` would match
    two names, and a prefix that works today breaks when a flag is added."""

    subcommands: dict[str, argparse.ArgumentParser]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see `{self.prog} --help`)")


def accept_both_spellings(parser: argparse.ArgumentParser) -> None:
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


# ----------------------------------------------------------------------------------------------
# Types: text to a checked value


@dataclass(frozen=True)
class Bounded:
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


def seed_type(flag: str) -> Callable[[str], int]:
    """argparse's `type=` for a seed flag: a whole number torch takes (see `check_seed`)."""

    def parse(text: str) -> int:
        seed = parse_value(flag, int, text)
        check_seed(seed, f"{flag} {text}")
        return seed

    return parse


def directory_path(text: str) -> Path:
    """An --out DIR: it may not exist yet, but must not be a file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {text} is a file; give a directory (it is created if missing)")
    return path


def image_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f"--out {text}: give a file name ending in .png, .pdf or .svg")
    if path.is_dir():
        raise ConfigError(f"--out {text} is a directory; give a file such as {path / 'loss.png'}")
    return path


# ----------------------------------------------------------------------------------------------
# Flags shared by several commands


def add_data_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--data`: a short name for the field data.source."""
    parser.add_argument(
        "--data", dest="data.source", default=argparse.SUPPRESS, metavar="PATH_OR_URL",
        help=help_text,
    )  # fmt: skip


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """How each token is drawn; unset flags keep the run's sample section."""
    parser.add_argument(
        "--temperature", type=Bounded("--temperature", float, least=0),
        help="0 for greedy decoding",
    )  # fmt: skip
    parser.add_argument(
        "--top-k", type=Bounded("--top-k", least=0), dest="top_k", help="0 for no top-k filter"
    )
    parser.add_argument(
        "--top-p", type=Bounded("--top-p", float, above=0, most=1), dest="top_p",
        help="1.0 for no nucleus filter",
    )  # fmt: skip
    add_precision_flag(parser)


def add_precision_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=typing.get_args(DecodingPrecision),
        help="weights read while decoding: float16 reads half the bytes (1.4-1.8x faster for "
        "tinystories-small on a CPU) and moves logits by ~1e-2; float32 is exact; auto: "
        "float16 on a CPU when the model's weights exceed 16 MiB (default: the run's "
        "sample.precision)",
    )


def add_prompt_flags(
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


def prompt_of(args: argparse.Namespace) -> str | None:
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


# ----------------------------------------------------------------------------------------------
# One flag per config field


def add_field_flags(
    parser: argparse.ArgumentParser,
    sections: tuple[str, ...] = ("model", "data", "train", "sample"),
) -> None:
    """One flag per config field, `--n_layer` and `--model.n_layer` alike, its help the field's
    (`tinygpt.config.option`); values stay text here and are parsed by the field's type in
    `apply_overrides`."""
    fields = all_fields()
    for section, cls in section_classes().items():
        if section not in sections:
            continue
        group = parser.add_argument_group(f"{section} fields ({cls.__doc__})")
        defaults, help_texts = cls(), field_help(cls)
        for name, (field_section, annotation, _) in fields.items():
            if field_section != section:
                continue
            group.add_argument(
                f"--{name}",
                f"--{section}.{name}",
                dest=f"{section}.{name}",
                default=argparse.SUPPRESS,
                metavar=type_name(annotation),
                help=f"{help_texts.get(name, '')} (default: {getattr(defaults, name)!r})".replace(
                    "%", "%%"
                ),
            )


def type_name(annotation: Any) -> str:
    """The metavar of a field's flag: `{a,b}` for a choice, else the type in capitals."""
    if typing.get_origin(annotation) is Literal:
        return "{" + ",".join(typing.get_args(annotation)) + "}"
    return getattr(annotation, "__name__", str(annotation)).upper()


def field_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given as flags, `{"train.max_iters": "400"}`, still as text."""
    return {key: value for key, value in vars(args).items() if "." in key}
