"""Chatting with a model trained on the dialog format: the history, kept within the context, and
the terminal loop of `tinygpt chat`.

The prompt is the conversation rendered by `history_prompt`, exactly as training rendered it, so
the model sees what it learned from. A model with learned positions sees at most block_size
tokens, and the reply needs `max_new_tokens` of them, so when the history no longer fits the
oldest turns go first: the newest ones matter most to the next reply.

A model trained on plain text can still chat; where its tokenizer cannot even write the markers
(a character vocabulary without `<`), the prompt is a `User: ...` / `Bot: ...` transcript.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TextIO

from tinygpt.data.chat_format import BOS, EOS, Conversation, history_prompt
from tinygpt.errors import ConfigError, DataError, TinyGPTError
from tinygpt.generate.engine import GenerationSettings, TextStream, stream_text
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.base import Tokenizer

Turn = tuple[str, str]  # (user, bot)
Render = Callable[[Sequence[Turn], str, Tokenizer], list[int]]  # (turns, new message) -> ids


def dialog_prompt(turns: Sequence[Turn], user_message: str, tokenizer: Tokenizer) -> list[int]:
    return history_prompt(Conversation(tuple(turns)), user_message, tokenizer)


def transcript_prompt(turns: Sequence[Turn], user_message: str, tokenizer: Tokenizer) -> list[int]:
    """`User: ...` / `Bot: ...` lines, for a tokenizer that cannot write `<s>` and `</s>`."""
    lines = "".join(f"User: {user}\nBot: {bot}\n" for user, bot in turns)
    return tokenizer.encode(f"{lines}User: {user_message}\nBot:")


@dataclass(frozen=True)
class PromptFormat:
    render: Render
    stops: tuple[str, ...]  # text that ends a reply
    is_dialog: bool


# `</s>` ends a reply even where the tokenizer has no special id for it (char tokenizers), and a
# model that starts the next turn by itself is cut where it does
DIALOG = PromptFormat(dialog_prompt, (EOS, BOS, "User:"), is_dialog=True)
TRANSCRIPT = PromptFormat(transcript_prompt, ("\n", "User:"), is_dialog=False)


def prompt_format_for(tokenizer: Tokenizer) -> PromptFormat:
    """The dialog format where the tokenizer can write its markers, else a plain transcript: a
    character vocabulary learnt from text without `<` (TinyShakespeare) cannot."""
    try:
        dialog_prompt([("", "")], "", tokenizer)
    except DataError:
        return TRANSCRIPT
    return DIALOG


def fit_prompt(
    turns: Sequence[Turn],
    user_message: str,
    tokenizer: Tokenizer,
    budget: int,
    cut_long_message: bool = True,
    render: Render = dialog_prompt,
) -> tuple[list[int], int]:
    """The ids of the newest turns that fit in `budget` tokens, then the new message and
    `<sep> Bot:`; and how many old turns were left out.

    If the new message alone is longer than `budget`, its last `budget` tokens are kept (the
    prompt still ends with "Bot:"), or a DataError says so when `cut_long_message` is false."""
    if budget < 1:
        raise DataError(f"no room for the prompt: the reply budget leaves {budget} tokens")
    alone = render([], user_message, tokenizer)
    if len(alone) > budget:
        if not cut_long_message:
            raise DataError(
                f"the last message takes {len(alone)} tokens with its markers but only {budget} "
                "fit beside the reply; shorten it or ask for fewer tokens"
            )
        return alone[-budget:], len(turns)
    best, kept = alone, 0
    # newest first; every turn costs at least a few tokens, so this stops after block_size / few
    for kept_now in range(1, len(turns) + 1):
        ids = render(turns[-kept_now:], user_message, tokenizer)
        if len(ids) > budget:
            break
        best, kept = ids, kept_now
    return best, len(turns) - kept


class ReplyTrimmer:
    """Strips the spaces the format sets around a reply (`Bot: {reply} </s>`) from streamed
    pieces: leading whitespace is dropped, trailing whitespace held back until more text follows,
    so the pieces join to the whole reply `.strip()`ped."""

    def __init__(self) -> None:
        self.is_started = False
        self.held = ""

    def push(self, piece: str) -> str:
        if not self.is_started:
            piece = piece.lstrip()
            self.is_started = bool(piece)
        text = self.held + piece
        body = text.rstrip()
        self.held = text[len(body) :]
        return body


def trim_reply(pieces: Iterable[str]) -> Iterator[str]:
    """`pieces` through a ReplyTrimmer, empty pieces left out."""
    trimmer = ReplyTrimmer()
    return filter(None, map(trimmer.push, pieces))


class ChatSession:
    """A conversation with one model: its turns so far and the settings of the next reply.

    `reply` streams the answer to a message; the caller records it with `add_turn` once it has
    read it, so a reply cut short (Ctrl-C, a client gone) is not remembered."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, settings: GenerationSettings) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.block_size = model.config.block_size
        self.history: list[Turn] = []
        self.format = prompt_format_for(tokenizer)
        self.settings = settings
        self.update()  # check the settings and add the chat stops

    def update(self, **changes: object) -> None:
        """Change settings (`temperature=0.7`); a bad value raises ConfigError, nothing changes."""
        settings = dataclasses.replace(self.settings, **changes)  # type: ignore[arg-type]
        if not 1 <= settings.max_new_tokens < self.block_size:
            raise ConfigError(
                f"max_new_tokens={settings.max_new_tokens} must be between 1 and "
                f"{self.block_size - 1}: the prompt needs room in the {self.block_size}-token "
                "context"
            )
        stops = tuple(dict.fromkeys((*settings.stop, *self.format.stops)))
        self.settings = dataclasses.replace(settings, stop=stops, stop_at_end_of_text=True)

    def reset(self) -> None:
        self.history.clear()

    def add_turn(self, user_message: str, reply: str) -> None:
        self.history.append((user_message, reply))

    def prompt_ids(self, user_message: str) -> list[int]:
        """The newest turns that leave room for the reply, then `user_message` and "Bot:"."""
        budget = self.block_size - self.settings.max_new_tokens
        ids, _ = fit_prompt(
            self.history, user_message, self.tokenizer, budget, render=self.format.render
        )
        return ids

    def reply(self, user_message: str) -> TextStream:
        if not user_message.strip():
            raise DataError("the message is empty; type something to say")
        return stream_text(self.model, self.tokenizer, self.prompt_ids(user_message), self.settings)


# ----------------------------------------------------------------------------------------------
# The terminal loop

HELP = (
    "/reset forget the conversation | /temp T | /top_k K | /top_p P | /max_tokens N | /help | "
    "/quit (or Ctrl-D) | Ctrl-C stops a reply, or clears the line"
)

# command: (settings field, parser of its value)
SETTING_COMMANDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "/temp": ("temperature", float),
    "/temperature": ("temperature", float),
    "/top_k": ("top_k", int),
    "/top_p": ("top_p", float),
    "/max_tokens": ("max_new_tokens", int),
}


def run_terminal_chat(session: ChatSession, input_stream: TextIO, output: TextIO) -> int:
    """Read a line, stream the reply, repeat; end on /quit or the end of input (Ctrl-D), with
    exit code 0.

    Ctrl-C stops a reply while it streams (the turn is not remembered) and the chat goes on.
    At a terminal's prompt it clears the line, as in a shell or Python's prompt, so that a
    second Ctrl-C meant for a reply that just ended does not quit. Read from a pipe, Ctrl-C
    ends the chat. Mistakes (a bad command value, a message the tokenizer cannot encode) print
    one line and the chat goes on."""
    is_terminal = _is_terminal(input_stream, output)
    while True:
        try:
            line = _read_line(input_stream, output, is_terminal)
        except KeyboardInterrupt:
            output.write("\n")
            if is_terminal:
                continue
            return 0
        if not line:  # Ctrl-D
            output.write("\n")
            return 0
        message = line.strip()
        if not message:
            continue
        if message.startswith("/"):
            if not _run_command(session, message, output):
                return 0
            continue
        _answer(session, message, output)


def _answer(session: ChatSession, message: str, output: TextIO) -> None:
    """Stream the reply to `message`; remember the turn unless it failed or Ctrl-C stopped it."""
    pieces = []
    try:
        stream = session.reply(message)
        output.write("Bot: ")
        for piece in trim_reply(stream):
            output.write(piece)
            output.flush()
            pieces.append(piece)
        output.write("\n")
    except TinyGPTError as err:
        output.write(f"error: {err}\n")
        return
    except KeyboardInterrupt:
        output.write(" [stopped]\n")
        return
    session.add_turn(message, "".join(pieces))


def _is_terminal(input_stream: TextIO, output: TextIO) -> bool:
    return input_stream is sys.stdin and output is sys.stdout and sys.stdin.isatty()


def _read_line(input_stream: TextIO, output: TextIO, is_terminal: bool) -> str:
    """A line with its newline, or "" at the end of input."""
    if is_terminal:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing and history for input())
        try:
            return input("You: ") + "\n"
        except EOFError:
            return ""
    output.write("You: ")
    output.flush()
    return input_stream.readline()


def _run_command(session: ChatSession, line: str, output: TextIO) -> bool:
    """Do a /command; False means quit."""
    command, _, value = line.partition(" ")
    value = value.strip()
    if command in ("/quit", "/exit"):
        return False
    if command == "/help":
        output.write(HELP + "\n")
    elif command == "/reset":
        session.reset()
        output.write("(history cleared)\n")
    elif command in SETTING_COMMANDS:
        name, parse = SETTING_COMMANDS[command]
        try:
            session.update(**{name: parse(value)})
        except ValueError:
            kind = "whole number" if parse is int else "number"
            output.write(f"{command} needs a {kind}, e.g. `{command} 1`\n")
        except TinyGPTError as err:
            output.write(f"{command}: {err}\n")
        else:
            output.write(f"({name} = {getattr(session.settings, name)})\n")
    else:
        output.write(f"unknown command {command}; {HELP}\n")
    return True
