"""The training step time of recipes here: each recipe's real training step (the trainer with
its CPU speed-ups, no run directory), timed in interleaved rounds so that a neighbour slowing
the machine for a while slows every recipe alike. Prints the median step of each round and the
median over rounds.

    .venv/bin/python benchmarks/recipe_step_time.py benchmarks/recipes/shakespeare-long.toml \
        benchmarks/recipes/shakespeare-long-dropout.toml \
        benchmarks/recipes/shakespeare-long-residual-dropout.toml
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from bench_common import machine_line, quiet_logging

from tinygpt.compare.variants import load_variant, with_prepared_vocab
from tinygpt.errors import TinyGPTError
from tinygpt.train.step_time import time_train_steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+", help="recipe TOML files or preset names")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per recipe and round")
    args = parser.parse_args()
    quiet_logging()
    print(machine_line(torch.get_num_threads()))
    try:
        prepared = [with_prepared_vocab(load_variant(spec, {}).config) for spec in args.recipes]
    except TinyGPTError as err:
        print(f"recipe_step_time: error: {err}", file=sys.stderr)
        return 2
    rounds: list[list[float]] = [[] for _ in args.recipes]
    for number in range(1, args.rounds + 1):
        for spec, (config, data), medians in zip(args.recipes, prepared, rounds, strict=True):
            medians.append(statistics.median(time_train_steps(config, data, args.steps)))
            print(f"round {number}: {spec}: {medians[-1] * 1e3:.0f} ms a step", flush=True)
    for spec, medians in zip(args.recipes, rounds, strict=True):
        print(f"{spec}: median over rounds {statistics.median(medians) * 1e3:.0f} ms a step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
