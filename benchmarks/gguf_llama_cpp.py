"""Does llama.cpp generate what tinygpt generates, from a `tinygpt export --format gguf` file?

Trains two tiny runs on the built-in TinyShakespeare with a BPE tokenizer (a GPT-2 block with
the tanh GELU that llama.cpp's gpt2 computes, and a Llama block with grouped-query attention),
or takes the runs given, exports each as an f32 GGUF file, and decodes the same prompt greedily
with llama.cpp (through llama-cpp-python: temperature 0, top-k 1, no repetition penalty) and
with tinygpt. llama.cpp tokenizes the prompt itself, so its tokenizer is checked too. It prints
both texts, whether they and the prompt's ids are equal, llama.cpp's version and the CPU kind,
and exits 1 if any run differs (2 if nothing could be compared). llama.cpp rounds GELU's output
to f16 and sums in its own order, so two logits within about 1e-3 of each other may swap; a
trained model rarely has such a near tie in a short text.

    pip install llama-cpp-python          # builds llama.cpp from source (a few minutes)
    .venv/bin/python benchmarks/gguf_llama_cpp.py                         # ~2 min on 2 cores
    .venv/bin/python benchmarks/gguf_llama_cpp.py --gpt2-run runs/a --llama-run runs/b
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

import torch

from tinygpt.cli import main as tinygpt
from tinygpt.generate.engine import GenerationSettings, stream_text
from tinygpt.run.load import load_model_from_run

SHAPE = [
    "--tokenizer", "bpe", "--tokenizer_vocab_size", "1024", "--block_size", "128",
    "--n_layer", "2", "--n_head", "4", "--n_embd", "64", "--dropout", "0",
    "--batch_size", "16", "--eval_interval", "100", "--eval_iters", "5", "--log_interval", "100",
]  # fmt: skip
BLOCKS = {
    "gpt2": ["--activation", "gelu_tanh"],
    "llama": [
        "--norm", "rmsnorm", "--position", "rope", "--ffn", "swiglu", "--bias", "false",
        "--n_kv_head", "2",
    ],
}  # fmt: skip
INSTALL_HINT = "this check needs llama-cpp-python: pip install llama-cpp-python"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gpt2-run", type=Path, help="a GPT-2-block run to use instead of training"
    )
    parser.add_argument(
        "--llama-run", type=Path, help="a Llama-block run to use instead of training"
    )
    parser.add_argument("--prompt", default="ROMEO:\nWhat light")
    parser.add_argument("--tokens", type=int, default=48, help="new tokens to decode")
    parser.add_argument("--iters", type=int, default=300, help="training steps of each new run")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp's threads")
    return parser.parse_args(argv)


def give_up(reason: str) -> NoReturn:
    """Exit 2: nothing was compared (1 means llama.cpp differs)."""
    print(f"gguf_llama_cpp: {reason}", file=sys.stderr)
    sys.exit(2)


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        give_up(INSTALL_HINT)
    return llama_cpp


def trained_run(block: str, folder: Path, iters: int) -> Path:
    run_dir = folder / block
    code = tinygpt(
        ["train", "--out", str(run_dir), *SHAPE, "--max_iters", str(iters), *BLOCKS[block]]
    )
    if code != 0:
        give_up(f"training the {block} run failed")
    return run_dir


def exported(block: str, run_dir: Path, folder: Path) -> Path:
    path = folder / f"{block}.gguf"
    if tinygpt(["export", str(run_dir), "--format", "gguf", "--quant", "f32", "--out", str(path)]):
        give_up(f"exporting {run_dir} failed")
    return path


def tinygpt_greedy(run_dir: Path, prompt: list[int], steps: int) -> str:
    """What `tinygpt sample --temperature 0` writes after `prompt`: exact float32 weights, and
    no stop at end-of-text (llama.cpp's generate does not stop either)."""
    model, tokenizer, _ = load_model_from_run(run_dir)
    settings = GenerationSettings(
        max_new_tokens=steps, temperature=0.0, stop_at_end_of_text=False, precision="float32"
    )
    return stream_text(model, tokenizer, prompt, settings).text()


def llama_cpp_greedy(
    llama_cpp: Any, path: Path, prompt: str, steps: int, threads: int
) -> tuple[list[int], list[int]]:
    """llama.cpp's own ids for `prompt` (no BOS: tinygpt's prompts start with the text) and the
    greedy ids it decodes after them."""
    model = llama_cpp.Llama(model_path=str(path), n_ctx=0, n_threads=threads, verbose=False)
    prompt_ids = model.tokenize(prompt.encode("utf-8"), add_bos=False, special=False)
    tokens = model.generate(prompt_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0)
    return prompt_ids, [int(token) for _, token in zip(range(steps), tokens, strict=False)]


def compare(llama_cpp: Any, run_dir: Path, path: Path, args: argparse.Namespace) -> bool:
    """Print both greedy texts of one run; whether llama.cpp's are tinygpt's."""
    _, tokenizer, config = load_model_from_run(run_dir)
    prompt = tokenizer.encode(args.prompt)
    steps = min(args.tokens, config.model.block_size - len(prompt))
    ours = tinygpt_greedy(run_dir, prompt, steps)
    their_prompt, their_ids = llama_cpp_greedy(llama_cpp, path, args.prompt, steps, args.threads)
    theirs = tokenizer.decode(their_ids)
    is_equal = their_prompt == prompt and theirs == ours
    print(f"\n== {run_dir} as llama.cpp's {path.stem}: {steps} greedy tokens")
    print(f"prompt ids equal: {their_prompt == prompt}")
    print(f"tinygpt:   {args.prompt + ours!r}")
    print(f"llama.cpp: {args.prompt + theirs!r}")
    print(f"equal: {is_equal}")
    return is_equal


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    llama_cpp = import_llama_cpp()
    with tempfile.TemporaryDirectory(prefix="gguf-llama-cpp-") as work:
        folder = Path(work)
        given = {"gpt2": args.gpt2_run, "llama": args.llama_run}
        runs = {
            block: run or trained_run(block, folder, args.iters) for block, run in given.items()
        }
        results = [
            compare(llama_cpp, run, exported(block, run, folder), args)
            for block, run in runs.items()
        ]
    print(f"\nllama.cpp (llama-cpp-python) {llama_cpp.__version__}")
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}")
    print("all equal" if all(results) else "DIFFERENT")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
