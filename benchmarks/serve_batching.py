"""What batching concurrent requests buys the server: 8 clients, decoded together or one at a time.

The server's `GenerationWorker` (no HTTP: the worker is what batching changes) gets `--clients`
requests of a `--prompt-tokens`-token prompt and `--new-tokens` new tokens each (top-k 200
sampling, seeds 0..N-1), either all at once or one every `--stagger-ms`. It runs them with
max_batch 1 (one request at a time, as the server did before) and max_batch = clients, and
prints for each: the time until every reply is complete, the tokens/s over all clients, and the
mean and worst time until a client's first text and until its last.

Models: the `baby-shakespeare` and `tinystories-small` architectures with random weights (speed
does not depend on what was learned), block_size 256, each decoding with the weights `auto`
picks for it. The prompts are random ids; the sampled ids are limited to a character
vocabulary so text decoding costs nothing, which changes no matrix product.

    .venv/bin/python benchmarks/serve_batching.py          # ~30 s on 2 cores
    .venv/bin/python benchmarks/serve_batching.py --models tinystories-small --stagger-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import string
import time
from dataclasses import dataclass

import torch
from bench_common import DECODING_MODELS, cpu_line, decoding_model, machine_line, split_choices

from tinygpt.generate.engine import GenerationSettings
from tinygpt.generate.fast_weights import decoding_dtype
from tinygpt.model.gpt import GPT
from tinygpt.serve.worker import Choice, Delta, GenerationWorker
from tinygpt.tokenizers.char import CharTokenizer


@dataclass
class Outcome:
    model: str
    max_batch: int
    wall_s: float
    tokens: int
    first_piece_s: list[float]
    done_s: list[float]


async def serve(worker: GenerationWorker, prompts: list[list[int]], new_tokens: int,
                stagger_s: float) -> tuple[float, list[float], list[float]]:  # fmt: skip
    """Submit every prompt (one every stagger_s) and wait for all replies; return the wall time
    and, per client, the seconds from its submission to its first piece and to its end."""
    start = time.perf_counter()

    async def client(index: int) -> tuple[float, float]:
        await asyncio.sleep(index * stagger_s)
        submitted = time.perf_counter()
        settings = GenerationSettings(
            new_tokens, min_new_tokens=new_tokens, temperature=0.8, top_k=200, seed=index,
            stop_at_end_of_text=False,
        )  # fmt: skip
        first = None
        async for _, event in worker.submit([Choice(prompts[index], settings)]).stream():
            if first is None and isinstance(event, Delta) and event.text:
                first = time.perf_counter() - submitted
        return first or 0.0, time.perf_counter() - submitted

    results = await asyncio.gather(*(client(i) for i in range(len(prompts))))
    return time.perf_counter() - start, [r[0] for r in results], [r[1] for r in results]


def measure(name: str, model: GPT, tokenizer: CharTokenizer, max_batch: int,
            args: argparse.Namespace) -> Outcome:  # fmt: skip
    generator = torch.Generator().manual_seed(1)
    prompts = torch.randint(
        0, tokenizer.vocab_size, (args.clients, args.prompt_tokens), generator=generator
    ).tolist()
    worker = GenerationWorker(model, tokenizer, max_waiting=args.clients, max_batch=max_batch)
    worker.start()
    try:
        wall, first, done = asyncio.run(
            serve(worker, prompts, args.new_tokens, args.stagger_ms / 1000)
        )
    finally:
        worker.stop()
    return Outcome(name, max_batch, wall, args.clients * args.new_tokens, first, done)


def report(outcomes: list[Outcome]) -> str:
    lines = [
        "| model | max batch | all done s | tokens/s | first text mean / worst s "
        "| reply done mean / worst s |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.model} | {o.max_batch} | {o.wall_s:.1f} | {o.tokens / o.wall_s:,.0f} "
            f"| {statistics.mean(o.first_piece_s):.2f} / {max(o.first_piece_s):.2f} "
            f"| {statistics.mean(o.done_s):.1f} / {max(o.done_s):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DECODING_MODELS))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--stagger-ms", type=float, default=0.0, help="between arrivals")
    args = parser.parse_args()
    names = split_choices(parser, "--models", args.models, list(DECODING_MODELS))
    print(machine_line())
    tokenizer = CharTokenizer.train(string.ascii_letters + " .\n")  # fits every vocab here
    outcomes = []
    for name in names:
        model = decoding_model(name, block_size=256)
        for max_batch in (1, args.clients):
            outcomes.append(measure(name, model, tokenizer, max_batch, args))
            print("\n".join(report(outcomes[-1:]).splitlines()[2:]), flush=True)
        dtype = str(decoding_dtype("auto", model)).removeprefix("torch.")
        print(f"  ({name} decodes with {dtype} weights)")
    print()
    print(report(outcomes))
    print(
        f"\n{args.clients} clients, {args.prompt_tokens}-token prompts, {args.new_tokens} new "
        f"tokens each, arrivals {args.stagger_ms:g} ms apart; {torch.get_num_threads()} threads, "
        f"{cpu_line()}."
    )


if __name__ == "__main__":
    main()
