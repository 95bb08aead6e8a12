"""Generation speed with and without the KV cache, for 1 and 8 prompts at contexts 256 and 1024.

Models: the `baby-shakespeare` and `tinystories-small` architectures (random weights: speed does
not depend on what was learned), with block_size = context + new tokens so nothing slides. Each
case prefills `context` prompt tokens per sequence, then decodes `--new-tokens` (default 512)
tokens per sequence with a `BatchDecoder` (top-k 200 sampling, what `tinygpt sample` does),
once per `--precisions` entry: the dtype of the weights decoding steps read, float16 or
float32 (exact); the `auto` default of `tinygpt sample`, chat and serve picks one by the model's
size, see `tinygpt.generate.fast_weights`.

With the cache every step is timed, and a case's time is the median step times the steps (a
median, so a moment of noise from another process on a shared machine does not move it; the
cache's steps barely grow with the length). Without it, a step recomputes the whole sequence, so
its cost grows with the length; generating 512 tokens that way takes minutes per case, so
`--probes` steps are timed (the median of 3 tries each) at lengths spread over the run and the
total is their mean times the steps (the cost is linear-to-quadratic in length, so evenly spread
probes are a fair mean; `--full-recompute` times every step once instead, to check that
estimate).

    .venv/bin/python benchmarks/generate_speed.py                 # ~8 min on 2 cores
    .venv/bin/python benchmarks/generate_speed.py --models tinystories-small --prompts 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_common import DECODING_MODELS, cpu_line, decoding_model, machine_line, split_choices

from tinygpt.generate.decode import BatchDecoder
from tinygpt.generate.fast_weights import DECODING_DTYPES, decoding_dtype
from tinygpt.generate.sampling import sample_next_token
from tinygpt.model.gpt import GPT
from tinygpt.train.cpu_speedups import keep_freed_memory_in_process


@dataclass
class Case:
    model: str
    prompts: int
    context: int
    precision: str
    cached: bool
    new_tokens: int
    prefill_s: float = 0.0
    decode_s: float = 0.0  # for all new tokens (estimated from probes when not cached)
    estimated: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.prompts * self.new_tokens / self.decode_s


def prompts_for(model: GPT, batch: int, context: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (batch, context), generator=generator)
    return ids.tolist()


@torch.inference_mode()
def sampled_tokens(
    model: GPT, prompts: list[list[int]], new_tokens: int, precision: torch.dtype
) -> Iterator[torch.Tensor]:
    """The next token of every prompt (B,) once per step: top-k 200 at temperature 0.8."""
    decoder = BatchDecoder(model, prompts, precision=precision)
    generator = torch.Generator(device=decoder.device).manual_seed(0)
    for _ in range(new_tokens):
        next_ids = sample_next_token(decoder.next_logits(), 0.8, 200, 1.0, generator).view(-1)
        decoder.push(next_ids)
        yield next_ids


def run_cached(model: GPT, case: Case) -> None:
    prompts = prompts_for(model, case.prompts, case.context)
    steps = sampled_tokens(model, prompts, case.new_tokens, DECODING_DTYPES[case.precision])
    start = time.perf_counter()
    next(steps)  # the prefill and the first token
    case.prefill_s = time.perf_counter() - start
    times = []
    while True:
        start = time.perf_counter()
        if next(steps, None) is None:
            break
        times.append(time.perf_counter() - start)
    case.decode_s = statistics.median(times) * case.new_tokens


def time_call(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


@torch.no_grad()
def run_recompute(model: GPT, case: Case, probes: int, full: bool) -> None:
    """Time full-recompute steps at `probes` lengths spread over the run (or every step)."""
    prompts = prompts_for(model, case.prompts, case.context)
    decoder = BatchDecoder(
        model, prompts, use_cache=False, precision=DECODING_DTYPES[case.precision]
    )
    lengths = (
        range(case.new_tokens)
        if full
        else [round(i * (case.new_tokens - 1) / max(1, probes - 1)) for i in range(probes)]
    )
    pad = torch.zeros(case.prompts, 0, dtype=torch.long)
    tries = 1 if full else 3
    times = []
    for extra in lengths:
        decoder.tokens = torch.cat((torch.tensor(prompts), pad.new_zeros(case.prompts, extra)), 1)
        times.append(statistics.median(time_call(decoder.next_logits) for _ in range(tries)))
    case.decode_s = statistics.mean(times) * case.new_tokens
    case.estimated = not full


def report(cases: list[Case]) -> str:
    lines = [
        "| model | prompts | context | weights | cache | tokens/s | ms/step | prefill s "
        "| speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    plain = {(c.model, c.prompts, c.context, c.precision): c for c in cases if not c.cached}
    for case in cases:
        ms_per_step = 1000 * case.decode_s / case.new_tokens
        reference = plain.get((case.model, case.prompts, case.context, case.precision))
        speedup = f"{reference.decode_s / case.decode_s:.1f}x" if case.cached and reference else ""
        estimate = " (est.)" if case.estimated else ""
        prefill = f"{case.prefill_s:.2f}" if case.cached else ""
        lines.append(
            f"| {case.model} | {case.prompts} | {case.context} | {case.precision} "
            f"| {'yes' if case.cached else 'no'}"
            f" | {case.tokens_per_second:,.0f}{estimate} | {ms_per_step:.1f} | {prefill} "
            f"| {speedup} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DECODING_MODELS))
    parser.add_argument("--prompts", default="1,8", help="batch sizes")
    parser.add_argument("--contexts", default="256,1024", help="prompt lengths in tokens")
    parser.add_argument("--precisions", default="float16,float32", help="decoding weights")
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--probes", type=int, default=6, help="timed steps without the cache")
    parser.add_argument("--full-recompute", action="store_true", help="time every step")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    names = split_choices(parser, "--models", args.models, list(DECODING_MODELS))
    precisions = split_choices(parser, "--precisions", args.precisions, list(DECODING_DTYPES))
    print(machine_line())
    keep_freed_memory_in_process()
    cases = []
    for name in names:
        for context in (int(c) for c in args.contexts.split(",")):
            model = decoding_model(name, context + args.new_tokens)
            for batch in (int(p) for p in args.prompts.split(",")):
                for precision in precisions:
                    cached = Case(name, batch, context, precision, True, args.new_tokens)
                    run_cached(model, cached)
                    plain = Case(name, batch, context, precision, False, args.new_tokens)
                    run_recompute(model, plain, args.probes, args.full_recompute)
                    cases += [cached, plain]
                    print("\n".join(report([cached, plain]).splitlines()[2:]), flush=True)
    print()
    print(report(cases))
    picks = {name: decoding_dtype("auto", decoding_model(name, 256)) for name in names}
    print(
        "\n`--precision auto` (the default) picks: "
        + ", ".join(f"{name} {str(dtype).removeprefix('torch.')}" for name, dtype in picks.items())
    )
    print(
        f"\nfloat32 models, {torch.get_num_threads()} threads, {cpu_line()}; "
        f"{args.new_tokens} new tokens per prompt; random weights."
    )
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(c) for c in cases], indent=1))


if __name__ == "__main__":
    main()
