"""The `tinygpt` command. The only module that writes to stdout (with the command modules in
`tinygpt.commands`); every user error ends here as one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import errno
import importlib.metadata
import logging
import os
import re
import sys

from tinygpt.commands.arguments import SPELLING_NOTE, Parser, accept_both_spellings
from tinygpt.commands.evaluation import (
    add_attention_command,
    add_compare_command,
    add_eval_command,
)
from tinygpt.commands.generation import add_chat_command, add_sample_command, add_serve_command
from tinygpt.commands.training import (
    add_plot_command,
    add_prepare_command,
    add_presets_command,
    add_train_command,
)
from tinygpt.commands.transfer import (
    add_export_command,
    add_finetune_command,
    add_import_hf_command,
)
from tinygpt.errors import ConfigError, TinyGPTError

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
# the subcommands, in the order `tinygpt --help` lists them
COMMANDS = (
    add_presets_command,
    add_train_command,
    add_prepare_command,
    add_sample_command,
    add_chat_command,
    add_serve_command,
    add_plot_command,
    add_eval_command,
    add_attention_command,
    add_compare_command,
    add_export_command,
    add_import_hf_command,
    add_finetune_command,
)


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


def build_parser() -> Parser:
    """The whole command line: each command module adds its own subcommands' flags."""
    parser = Parser(
        prog="tinygpt",
        description="Train, sample and inspect small GPT models.",
        epilog=SPELLING_NOTE,
    )
    parser.add_argument("--version", action="version", version=f"tinygpt {_package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add_command in COMMANDS:
        add_command(commands)
    parser.subcommands = commands.choices
    for subcommand in parser.subcommands.values():
        accept_both_spellings(subcommand)
    return parser


def _package_version() -> str:
    try:
        return importlib.metadata.version("tinygpt")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


if __name__ == "__main__":
    sys.exit(main())
