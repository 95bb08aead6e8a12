"""`tinygpt sample`, `chat` and `serve`: text from a trained run, printed, talked with in the
terminal, or served over HTTP."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from typing import TYPE_CHECKING, Any

from tinygpt.commands.arguments import (
    Bounded,
    add_precision_flag,
    add_prompt_flags,
    add_sampling_flags,
    prompt_of,
    seed_type,
)
from tinygpt.commands.runs import add_run_flags, load_run
from tinygpt.errors import ConfigError

if TYPE_CHECKING:
    from tinygpt.commands.arguments import Commands
    from tinygpt.generate.engine import GenerationSettings
    from tinygpt.model.gpt import GPT
    from tinygpt.tokenizers.base import Tokenizer

# `tinygpt sample` flags that override the run's sample section
SAMPLE_FLAGS = (
    "prompt", "max_new_tokens", "temperature", "top_k", "top_p", "sample_seed", "precision"
)  # fmt: skip


def add_sample_command(commands: Commands) -> None:
    sample = commands.add_parser("sample", help="generate text from a trained run")
    add_run_flags(sample)
    add_prompt_flags(sample, "text to continue (default: the run's sample.prompt)")
    sample.add_argument(
        "--max-new-tokens", type=Bounded("--max-new-tokens", least=0), dest="max_new_tokens"
    )
    add_sampling_flags(sample)
    sample.add_argument(
        "--seed",
        type=seed_type("--seed"),
        dest="sample_seed",
        metavar="SEED",
        help="same seed, same text; by default the run's sample_seed (1337 unless set when "
        "training), so every call prints the same text: give another seed for another",
    )
    _add_decoding_flags(sample)
    sample.set_defaults(handler=run_sample)


def _add_decoding_flags(sample: argparse.ArgumentParser) -> None:
    """What only `sample` offers: penalties, stop texts, several samples, beam search."""
    sample.add_argument(
        "--repetition-penalty", type=Bounded("--repetition-penalty", float, above=0),
        default=1.0, help="> 1 discourages repeats (CTRL)",
    )  # fmt: skip
    sample.add_argument(
        "--min-new-tokens", type=Bounded("--min-new-tokens", least=0), default=0,
        help="no end-of-text before",
    )  # fmt: skip
    sample.add_argument("--stop", action="append", default=[], help="stop at this text (repeat)")
    sample.add_argument(
        "--num-samples", type=Bounded("--num-samples", least=1), default=1,
        help="continuations of the prompt, as one batch",
    )  # fmt: skip
    sample.add_argument(
        "--num-beams", type=Bounded("--num-beams", least=1), default=1, help="> 1: beam search"
    )
    sample.add_argument(
        "--length-penalty", type=Bounded("--length-penalty", float), default=1.0,
        help="beam search",
    )  # fmt: skip


def add_chat_command(commands: Commands) -> None:
    chat = commands.add_parser(
        "chat",
        help="talk with a run trained on dialog data, in the terminal",
        description="Chat in the terminal; the history is kept within the model's context, "
        "oldest turns dropped first. Commands: /reset, /temp T, /top_k K, /top_p P, "
        "/max_tokens N, /help, /quit (or Ctrl-D). Ctrl-C stops a reply as it streams, and at "
        "the prompt clears the line.",
    )
    add_run_flags(chat)
    chat.add_argument(
        "--max-new-tokens",
        type=Bounded("--max-new-tokens", least=1),
        dest="max_new_tokens",
        help="tokens per reply (default: half the context)",
    )
    add_sampling_flags(chat)
    chat.add_argument(
        "--seed", type=seed_type("--seed"), help="same seed, same replies (default: a new one)"
    )
    chat.set_defaults(handler=run_chat)


def add_serve_command(commands: Commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve a run over an OpenAI-compatible HTTP API, with a chat page",
        description="Serve RUN_DIR at /v1/completions, /v1/chat/completions and /v1/models "
        "(OpenAI's API, streaming included) and a chat page at /.",
    )
    add_run_flags(serve)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)"
    )
    serve.add_argument(
        "--port", type=Bounded("--port", least=0, most=65535), default=8000, help="0: any free"
    )
    serve.add_argument(
        "--model-name", dest="model_name", help="the model id clients use (default: RUN_DIR's name)"
    )
    serve.add_argument(
        "--max-batch",
        type=Bounded("--max-batch", least=1),
        default=8,
        dest="max_batch",
        help="requests decoded together; more wait their turn (1: one at a time)",
    )
    add_precision_flag(serve)
    serve.set_defaults(handler=run_serve)


def run_sample(args: argparse.Namespace) -> int:
    from tinygpt.generate.engine import GenerationSettings, stream_text

    args.prompt = prompt_of(args)
    model, tokenizer, config, _ = load_run(args)
    chosen = {name: value for name in SAMPLE_FLAGS if (value := getattr(args, name)) is not None}
    sample = dataclasses.replace(config.sample, **chosen)  # validated like any config value
    settings = GenerationSettings.from_sample(
        sample,
        min_new_tokens=args.min_new_tokens,
        repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop),
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
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

    model, tokenizer, config, _ = load_run(args)
    sample, block_size = config.sample, config.model.block_size
    default_tokens = max(1, min(sample.max_new_tokens, block_size // 2))
    settings = GenerationSettings.from_sample(
        sample,
        max_new_tokens=_chosen(args.max_new_tokens, default_tokens),
        temperature=_chosen(args.temperature, sample.temperature),
        top_k=_chosen(args.top_k, sample.top_k),
        top_p=_chosen(args.top_p, sample.top_p),
        seed=args.seed,  # a chat is not replayed: fresh replies unless --seed is given
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
    from tinygpt.serve.app import create_app
    from tinygpt.serve.server import bind_socket, make_server, url_of

    model, tokenizer, config, _ = load_run(args)
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
