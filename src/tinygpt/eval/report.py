"""The report of `tinygpt eval`: every figure in eval.json, a summary table in eval.md."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinygpt.atomic_files import write_text_atomic
from tinygpt.directories import check_output_dir
from tinygpt.eval.metrics import perplexity


@dataclass
class EvalReport:
    run_dir: str
    checkpoint: str
    data: str  # the prepared directory that was scored
    split: str
    split_tokens: int
    predicted_tokens: int
    loss: float
    bits_per_char: float | None
    bits_per_byte: float | None
    bot_loss: float | None = None
    bot_tokens: int | None = None
    dialogs: int | None = None
    replies: int | None = None
    bleu: float | None = None
    distinct_1: float | None = None
    distinct_2: float | None = None
    examples: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def perplexity(self) -> float:
        return perplexity(self.loss)

    @property
    def bits_per_token(self) -> float:
        return self.loss / math.log(2)

    @property
    def bot_perplexity(self) -> float | None:
        return None if self.bot_loss is None else perplexity(self.bot_loss)

    def to_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document.update(
            perplexity=self.perplexity,
            bits_per_token=self.bits_per_token,
            bot_perplexity=self.bot_perplexity,
        )
        return document

    def to_markdown(self) -> str:
        rows = [
            ("tokens predicted", f"{self.predicted_tokens:,} of {self.split_tokens:,}"),
            ("loss (nats/token)", f"{self.loss:.4f}"),
            ("perplexity", f"{self.perplexity:.3f}"),
            ("bits/token", f"{self.bits_per_token:.4f}"),
            ("bits/char", _number(self.bits_per_char)),
            ("bits/byte", _number(self.bits_per_byte)),
        ]
        if self.bot_loss is not None and self.bot_perplexity is not None:
            rows += [
                (f"Bot-token loss ({self.bot_tokens:,} tokens)", f"{self.bot_loss:.4f}"),
                ("Bot-token perplexity", f"{self.bot_perplexity:.3f}"),
            ]
        if self.bleu is not None:
            rows += [
                (f"BLEU ({self.replies:,} replies, {self.dialogs:,} dialogs)", f"{self.bleu:.2f}"),
                ("distinct-1", _number(self.distinct_1)),
                ("distinct-2", _number(self.distinct_2)),
            ]
        lines = [
            f"## eval of {self.run_dir} ({self.checkpoint} checkpoint, {self.split} split)",
            "",
            "| metric | value |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in rows),
        ]
        if self.examples:
            lines += ["", "Example replies (greedy):", ""]
            for example in self.examples[:3]:
                lines += [
                    f"- User: {example['user']}",
                    f"  - reference: {example['reference']}",
                    f"  - model: {example['generated']}",
                ]
        lines += [f"\nNote: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


REPORT_FILES = ("eval.json", "eval.md")  # all `eval --out DIR` writes: DIR may hold only these


def write_report(report: EvalReport, out_dir: Path) -> tuple[Path, Path]:
    """EVAL_DIR/eval.json (every figure and a few replies) and eval.md (the summary table)."""
    check_output_dir(out_dir, REPORT_FILES)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = (out_dir / name for name in REPORT_FILES)
    document = json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    write_text_atomic(json_path, document)
    write_text_atomic(markdown_path, report.to_markdown())
    return json_path, markdown_path
