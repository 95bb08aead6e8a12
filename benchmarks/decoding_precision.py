"""How much float16 decoding weights change a trained model's predictions.

`tinygpt sample`, chat and serve decode big models with float16 copies of the weights (see
`tinygpt.generate.fast_weights`). This feeds the first `--tokens` tokens of a text through two
KV-cache decoders in step, one reading float32 weights and one float16, and compares their
next-token distributions at every position: the largest logit difference, the mean
KL(float32 || float16) in nats, how often the most likely token is the same, and the loss of the
true next token under each. Teacher forcing keeps both on the same text, so every difference is
the weights' dtype.

    .venv/bin/python benchmarks/decoding_precision.py RUN_DIR --text FILE [--tokens 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_common import cpu_line, machine_line, quiet_logging

from tinygpt.generate.decode import BatchDecoder
from tinygpt.run.load import load_model_from_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--text", type=Path, required=True, help="text to feed, e.g. val data")
    parser.add_argument("--tokens", type=int, default=1000)
    args = parser.parse_args()
    quiet_logging()
    print(machine_line())
    model, tokenizer, _ = load_model_from_run(args.run_dir, "best", "cpu")
    with args.text.open(encoding="utf-8") as handle:
        text = handle.read(args.tokens * 16)  # more characters than tokens, for any tokenizer
    ids = tokenizer.encode(text)[: args.tokens + 1]
    if len(ids) < 2:
        parser.error(f"{args.text} gives fewer than 2 tokens")
    exact = BatchDecoder(model, [ids[:1]], precision=torch.float32)
    half = BatchDecoder(model, [ids[:1]], precision=torch.float16)
    largest_difference, kl_sum, agree, loss_exact, loss_half = 0.0, 0.0, 0, 0.0, 0.0
    steps = len(ids) - 1
    for position in range(steps):
        log_p = F.log_softmax(exact.next_logits().float(), dim=-1)[0]  # (V,)
        log_q = F.log_softmax(half.next_logits().float(), dim=-1)[0]
        target = ids[position + 1]
        largest_difference = max(largest_difference, (log_p - log_q).abs().max().item())
        kl_sum += torch.sum(log_p.exp() * (log_p - log_q)).item()
        agree += int(log_p.argmax() == log_q.argmax())
        loss_exact -= log_p[target].item()
        loss_half -= log_q[target].item()
        for decoder in (exact, half):
            decoder.push(torch.tensor([target]))
    print(
        f"{args.run_dir.name}: {steps} positions | max |Δ log p| {largest_difference:.4f} | "
        f"mean KL {kl_sum / steps:.2e} nats | same top-1 {100 * agree / steps:.1f}% | "
        f"loss float32 {loss_exact / steps:.5f}, float16 {loss_half / steps:.5f} nats/token"
    )
    print(f"{torch.get_num_threads()} threads, {cpu_line()}")


if __name__ == "__main__":
    main()
