"""Tokenization throughput of tinygpt on this machine, now: MB/s per tokenizer, prepare's peak RSS.

Only about 2.4 MB of real TinyStories is stored here (`shared/data`: the V2 train head and the V1
train stories), so the 10 MB and 40 MB slices are those real stories repeated, written in the V2
release format (each story, then a line `<|endoftext|>`). `--corpus PATH` takes the stories from
another file instead (the full TinyStoriesV2 train file, say), repeated only if it is too short.

Per tokenizer:
- `encode_array` over the whole first slice in this process, timed alone (best of `--repeats`):
  with the tokenizer's native threads on every core, and pinned to one core;
- `prepare_dataset`, the real code path, with `workers=1` and `workers=<all cores>`, each in a
  fresh child process with a fresh cache: MB/s is slice bytes / wall time of the call. The child
  reports its own peak RSS (VmHWM) and the largest of its worker processes', polled from /proc.

bpe and sentencepiece are trained once, on the first ~2 MB, with an 8192 vocabulary; that time
is reported apart. Their `prepare` runs start from that tokenizer, put where a resumed prepare
finds it, so those figures are encoding only. char builds its vocabulary inside `prepare` (one
pass over the text) and gpt2 loads GPT-2's files: both are counted.

    .venv/bin/python benchmarks/tokenize_speed.py                       # ~3 min on 2 cores
    .venv/bin/python benchmarks/tokenize_speed.py --tokenizers gpt2 --sizes 10,40,160
    .venv/bin/python benchmarks/tokenize_speed.py \\
        --corpus TinyStoriesV2-GPT4-train.txt --json tok.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_common import cpu_line, cpu_model, quiet_logging, split_choices

from tinygpt.config import DataConfig
from tinygpt.data.prepare import SHARD_TEXT_BYTES, prepare_dataset
from tinygpt.data.sources import split_documents
from tinygpt.tokenizers.base import Tokenizer, build_tokenizer, load_tokenizer
from tinygpt.tokenizers.tiktoken_gpt2 import BPE_DIR_ENV

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TOKENIZERS = ("char", "bpe", "sentencepiece", "gpt2")
TRAINED = ("bpe", "sentencepiece")  # trained on the corpus, so seeded into prepare's work dir
MB = 1_000_000  # decimal, as in MB/s
TRAIN_BYTES = 2 * MB
VOCAB_SIZE = 8192
GPT2_TARGET_MB_S = 10.0
EOT_LINE = "<|endoftext|>\n"
# V1 (tinystories_train.txt): one story per line, paragraphs inside split by a blank line
V1_STORY_BOUNDARY = re.compile(r"(?<!\n)\n(?!\n)")
POLL_S = 0.02  # worker peak RSS sampling interval
CONTENDED_CORES = 0.25  # others' CPU, in cores, above which a measurement is flagged
FLAT_GROWTH = 1.2  # a peak RSS within 20% of the smallest size's counts as flat


@dataclass(frozen=True)
class Slice:
    path: Path
    target_mb: int
    bytes: int
    documents: int
    unique_bytes: int  # of distinct text before the stories start repeating
    passes: float  # bytes / unique_bytes


@dataclass
class PrepareRun:
    tokenizer: str
    size_mb: int
    workers: int
    wall_s: float
    mb_per_s: float
    main_peak_mb: float  # VmHWM of the child that calls prepare_dataset
    worker_peak_mb: float  # the largest VmHWM among that child's workers; 0 inline
    workers_seen: int
    baseline_mb: float  # the child's peak RSS after imports, before prepare_dataset
    tokens: int
    is_seeded: bool  # prepare encoded with the tokenizer trained on 2 MB, not one of its own
    others_cores: float  # CPU the rest of the machine used meanwhile (see CpuWatch)

    @property
    def total_peak_mb(self) -> float:
        """An upper bound on the RSS alive at once: every worker at the largest one's peak."""
        return self.main_peak_mb + (self.workers * self.worker_peak_mb if self.workers > 1 else 0)


# ----------------------------------------------------------------------------------------------
# The slices


def shared_stories() -> list[str]:
    """The real TinyStories here: V2 (`<|endoftext|>` lines; the last, cut-off story dropped),
    then V1 split one story per line as shared/data/README.md describes."""
    v2 = (SHARED_DATA / "tinystories_v2_train_head.txt").read_text(encoding="utf-8")
    v2_stories = list(split_documents(v2.splitlines(keepends=True)))[:-1]
    v1 = (SHARED_DATA / "tinystories_train.txt").read_text(encoding="utf-8")
    v1_stories = [story.strip() for story in V1_STORY_BOUNDARY.split(v1) if story.strip()]
    return v2_stories + v1_stories


def story_stream(corpus: Path | None) -> Callable[[], Iterator[str]]:
    """A fresh iterator over the stories on every call; a --corpus file is streamed, not read."""
    if corpus is None:
        stories = shared_stories()
        return lambda: iter(stories)

    def read() -> Iterator[str]:
        with corpus.open(encoding="utf-8", newline="") as handle:
            yield from split_documents(handle)

    return read


def write_slice(stories: Callable[[], Iterator[str]], target_mb: int, path: Path) -> Slice:
    """Whole stories, in the V2 format, until the file holds at least `target_mb`."""
    size = documents = unique = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        while size < target_mb * MB:
            count_before = documents
            for story in stories():
                record = f"{story}\n{EOT_LINE}"
                out.write(record)
                size += len(record.encode("utf-8"))
                documents += 1
                if size >= target_mb * MB:
                    break
            if not unique:
                unique = size
            if documents == count_before:
                raise SystemExit(f"tokenize_speed: {path} would be empty: the corpus has no text")
    return Slice(path, target_mb, size, documents, unique, size / unique)


def head_stories(path: Path, limit: int) -> list[str]:
    """The slice's first stories, about `limit` bytes of them, for training bpe/sentencepiece."""
    parts: list[str] = []
    size = 0
    with path.open(encoding="utf-8", newline="") as handle:
        for story in split_documents(handle):
            parts.append(story)
            size += len(story.encode("utf-8"))
            if size >= limit:
                break
    return parts


# ----------------------------------------------------------------------------------------------
# Encoding in this process


def data_config(args: argparse.Namespace, tokenizer: str, source: str, workers: int) -> DataConfig:
    return DataConfig(
        source=source,
        tokenizer=tokenizer,  # type: ignore[arg-type]
        tokenizer_vocab_size=VOCAB_SIZE,
        gpt2_bpe_dir=str(args.gpt2_bpe_dir),
        workers=workers,
    )


def build(args: argparse.Namespace, name: str, first: Slice, text: str) -> tuple[Tokenizer, float]:
    """The tokenizer as prepare builds it, and the seconds that took. bpe and sentencepiece
    learn from the first ~2 MB; char from the whole slice, as prepare does."""
    documents = head_stories(first.path, TRAIN_BYTES) if name in TRAINED else [text]
    start = time.perf_counter()
    tokenizer = build_tokenizer(data_config(args, name, str(first.path), 1), lambda: documents)
    return tokenizer, time.perf_counter() - start


def time_encode(tokenizer: Tokenizer, text: str, repeats: int) -> tuple[float, int, float]:
    """Best wall time of `encode_array` over `text`, the token count, and others' cores."""
    best, tokens = float("inf"), 0
    with CpuWatch() as watch:
        for _ in range(repeats):
            start = time.perf_counter()
            ids = tokenizer.encode_array(text)
            best = min(best, time.perf_counter() - start)
            tokens = len(ids)
            del ids
    return best, tokens, watch.others_cores


def time_encode_one_core(tokenizer: Tokenizer, text: str, repeats: int) -> float | None:
    """As `time_encode`, with this process pinned to one core: native threads then share it."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        return time_encode(tokenizer, text, repeats)[0]
    finally:
        os.sched_setaffinity(0, cores)


class CpuWatch:
    """CPU the rest of the machine used meanwhile, in cores: busy CPU from /proc/stat less this
    process's and its waited-for children's. On a shared 2-core VM a neighbour's process can take
    a core for minutes, and the all-cores figures then measure one core."""

    def __enter__(self) -> CpuWatch:
        self._start = (time.perf_counter(), own_cpu_s(), system_busy_s())
        self.others_cores = math.nan
        return self

    def __exit__(self, *exc: object) -> None:
        wall, own, busy = (
            now - then
            for now, then in zip(
                (time.perf_counter(), own_cpu_s(), system_busy_s()), self._start, strict=True
            )
        )
        self.others_cores = max(0.0, (busy - own) / wall) if wall > 0 else math.nan


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def system_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot (first line of /proc/stat)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, _steal = ticks
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------------------
# prepare_dataset in a child process


def run_prepare(
    args: argparse.Namespace, name: str, data: Slice, workers: int, seed: Path | None, tmp: Path
) -> PrepareRun:
    """Run prepare in a fresh interpreter, so that its peak RSS (and its workers') is its own."""
    run_dir = tmp / f"prepare-{name}-{data.target_mb}mb-w{workers}"
    request = {
        "config": asdict(data_config(args, name, str(data.path), workers)),
        "run_dir": str(run_dir),
        "seed": str(seed) if seed else "",
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(request)]
    try:
        with CpuWatch() as watch:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(
            f"tokenize_speed: prepare {name} {data.target_mb} MB workers={workers} failed:\n"
            f"{done.stderr.strip()}"
        )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return PrepareRun(
        tokenizer=name,
        size_mb=data.target_mb,
        workers=workers,
        wall_s=report["wall_s"],
        mb_per_s=data.bytes / MB / report["wall_s"],
        main_peak_mb=report["main_peak_mb"],
        worker_peak_mb=report["worker_peak_mb"],
        workers_seen=report["workers_seen"],
        baseline_mb=report["baseline_mb"],
        tokens=report["tokens"],
        is_seeded=report["is_seeded"],
        others_cores=watch.others_cores,
    )


def child_prepare(request_json: str) -> int:
    """In the child: prepare once into a fresh cache, then print the figures as one JSON line."""
    request = json.loads(request_json)
    config = DataConfig(**request["config"])
    run_dir = Path(request["run_dir"])
    out_dir = run_dir / "prepared"
    if request["seed"]:
        # where prepare keeps the tokenizer of an interrupted run, and loads it back on resume
        work = out_dir.with_name(f".{out_dir.name}.work")
        work.mkdir(parents=True)
        shutil.copyfile(request["seed"], work / "tokenizer.json")
    baseline = peak_rss_mb("self")
    with ChildPeaks() as workers:
        start = time.perf_counter()
        prepared = prepare_dataset(config, cache_dir=run_dir / "cache", out_dir=out_dir)
        wall = time.perf_counter() - start
    is_seeded = bool(request["seed"]) and (
        load_tokenizer(prepared.tokenizer_path).to_dict()
        == load_tokenizer(Path(request["seed"])).to_dict()
    )
    report = {
        "wall_s": wall,
        "main_peak_mb": peak_rss_mb("self"),
        "worker_peak_mb": max(workers.peaks.values(), default=0.0),
        "workers_seen": len(workers.peaks),
        "baseline_mb": baseline,
        "tokens": prepared.train_tokens + prepared.val_tokens,
        "is_seeded": is_seeded,
    }
    print(json.dumps(report), flush=True)
    return 0


def peak_rss_mb(pid: int | str) -> float:
    """VmHWM, the peak RSS of the process's memory since its exec, or 0.0 once it is gone.

    Not `getrusage`'s ru_maxrss: Linux carries the parent's peak over fork and exec into it, so
    a child started by a 1 GB parent reports at least 1 GB, however little it uses itself.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB  # kB
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


class ChildPeaks:
    """Polls the VmHWM of this process's worker processes while they live.

    A high-water mark only rises, so a sample every POLL_S misses at most what a worker adds in
    its last POLL_S. multiprocessing's resource tracker, also a child, is left out.
    """

    def __init__(self) -> None:
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ChildPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        parent = os.getpid()
        while True:
            for pid in child_pids(parent):
                peak = peak_rss_mb(pid)
                if peak and not is_resource_tracker(pid):
                    self.peaks[pid] = max(self.peaks.get(pid, 0.0), peak)
            if self._stop.wait(POLL_S):
                return


def child_pids(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def is_resource_tracker(pid: int) -> bool:
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


# ----------------------------------------------------------------------------------------------
# Report


def machine_line() -> str:
    versions = ", ".join(
        f"{package} {importlib.metadata.version(package)}"
        for package in ("tokenizers", "tiktoken", "sentencepiece", "numpy")
    )
    return f"machine: {cpu_line()}, python {platform.python_version()}, {versions}"


def slice_line(args: argparse.Namespace, data: Slice) -> str:
    origin = str(args.corpus) if args.corpus else "the real TinyStories in shared/data (V2 + V1)"
    repeated = (
        f"{data.unique_bytes / MB:.2f} MB of {origin}, repeated {data.passes:.1f} times"
        if data.passes > 1
        else f"the first {data.bytes / MB:.2f} MB of {origin}, not repeated"
    )
    return (
        f"slice {data.target_mb} MB: {data.bytes / MB:.2f} MB, {data.documents:,} stories in the "
        f"V2 format: {repeated}"
    )


def format_rss(run: PrepareRun | None) -> str:
    if run is None:
        return "-"
    if run.workers == 1:
        return f"{run.main_peak_mb:.0f} MB"
    return (
        f"{run.total_peak_mb:.0f} MB ({run.main_peak_mb:.0f} + "
        f"{run.workers} x {run.worker_peak_mb:.0f})"
    )


def format_table(
    args: argparse.Namespace,
    encode: dict[str, dict[str, Any]],
    runs: list[PrepareRun],
) -> str:
    first, workers_all = args.sizes[0], args.workers_all
    by_key = {(r.tokenizer, r.size_mb, r.workers): r for r in runs}
    rss_headers = " | ".join(f"peak RSS {size} MB (workers={workers_all})" for size in args.sizes)
    lines = [
        f"| tokenizer | train s | encode MB/s (1 process) | encode MB/s (1 core) "
        f"| prepare MB/s workers=1 | prepare MB/s workers={workers_all} | {rss_headers} |",
        "|" + "---|" * (6 + len(args.sizes)),
    ]
    for name in args.tokenizers:
        figures = encode[name]
        one = by_key.get((name, first, 1))
        many = by_key.get((name, first, workers_all))
        one_core = figures["one_core_mb_per_s"]
        rss = " | ".join(format_rss(by_key.get((name, size, workers_all))) for size in args.sizes)
        lines.append(
            f"| {name} | {figures['build_s']:.1f} | {figures['mb_per_s']:.1f} "
            f"| {'-' if one_core is None else f'{one_core:.1f}'} "
            f"| {'-' if one is None else f'{one.mb_per_s:.1f}'} "
            f"| {'-' if many is None else f'{many.mb_per_s:.1f}'} | {rss} |"
        )
    return "\n".join(lines)


def format_runs(runs: list[PrepareRun]) -> str:
    lines = [
        "| tokenizer | slice MB | workers | wall s | MB/s | tokens | main peak MB "
        "| largest worker peak MB | main before prepare MB | seeded tokenizer | others' cores |",
        "|" + "---|" * 11,
    ]
    for run in runs:
        seeded = "-"
        if run.tokenizer in TRAINED:
            seeded = "yes" if run.is_seeded else "NO: prepare trained its own"
        worker = f"{run.worker_peak_mb:.0f}" if run.workers > 1 else "- (inline)"
        lines.append(
            f"| {run.tokenizer} | {run.size_mb} | {run.workers} | {run.wall_s:.1f} "
            f"| {run.mb_per_s:.1f} | {run.tokens:,} | {run.main_peak_mb:.0f} | {worker} "
            f"| {run.baseline_mb:.0f} | {seeded} | {run.others_cores:.2f} |"
        )
    return "\n".join(lines)


def flatness_lines(args: argparse.Namespace, runs: list[PrepareRun]) -> list[str]:
    """Peak RSS across the slice sizes, per tokenizer and worker count, with a verdict."""
    lines = []
    for name in args.tokenizers:
        for workers in sorted({r.workers for r in runs}):
            mine = sorted(
                (r for r in runs if r.tokenizer == name and r.workers == workers),
                key=lambda r: r.size_mb,
            )
            if len(mine) < 2:
                continue
            peaks = [("main", [r.main_peak_mb for r in mine])]
            if workers > 1:
                peaks.append(("largest worker", [r.worker_peak_mb for r in mine]))
            is_flat = all(values[-1] <= FLAT_GROWTH * values[0] for _, values in peaks)
            shown = ", ".join(
                f"{what} " + " → ".join(f"{v:.0f}" for v in values) + " MB"
                for what, values in peaks
            )
            sizes = " → ".join(str(r.size_mb) for r in mine)
            line = (
                f"peak RSS {name} workers={workers}, {sizes} MB of text: {shown}: "
                f"{'flat' if is_flat else 'GROWS'}"
            )
            # prepare keeps up to 2 x workers shards in flight; below that the pipeline is
            # still filling, so a rise from the smallest slice is expected and bounded
            in_flight = 2 * workers * SHARD_TEXT_BYTES / MB
            if mine[0].size_mb < in_flight:
                line += (
                    f" (the {mine[0].size_mb} MB slice is under prepare's in-flight bound, "
                    f"2 x {workers} shards = {in_flight:.0f} MB of text)"
                )
            lines.append(line)
    return lines


def target_line(
    args: argparse.Namespace, encode: dict[str, dict[str, Any]], runs: list[PrepareRun]
) -> str:
    if "gpt2" not in encode:
        return "gpt2 target: not measured (gpt2 not in --tokenizers)"
    prepared = [r for r in runs if r.tokenizer == "gpt2" and r.workers == args.workers_all]
    best_prepare = max((r.mb_per_s for r in prepared), default=0.0)
    encode_rate = encode["gpt2"]["mb_per_s"]
    is_met = best_prepare >= GPT2_TARGET_MB_S
    return (
        f"gpt2 target (>= {GPT2_TARGET_MB_S:.0f} MB/s on {os.cpu_count()} cores): "
        f"{'MET' if is_met else 'NOT MET'} by prepare (workers={args.workers_all}: "
        f"{best_prepare:.1f} MB/s); encode_array alone: {encode_rate:.1f} MB/s "
        f"({'at or above' if encode_rate >= GPT2_TARGET_MB_S else 'below'} the target). "
        "The target counts as met only when prepare, end to end, reaches it."
    )


def contention_line(encode: dict[str, dict[str, Any]], runs: list[PrepareRun]) -> str:
    others = [f["others_cores"] for f in encode.values()] + [r.others_cores for r in runs]
    others = [value for value in others if not math.isnan(value)]
    if not others:
        return "others' cores: not measured (no /proc/stat)"
    worst = max(others)
    verdict = (
        "the machine was ours"
        if worst < CONTENDED_CORES
        else "CONTENDED: another process took CPU, so the all-cores figures are low; run again "
        "on an idle machine"
    )
    return (
        f"others' cores (CPU the rest of the machine used meanwhile): mean "
        f"{sum(others) / len(others):.2f}, max {worst:.2f} of {os.cpu_count()}: {verdict}"
    )


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizers", default=",".join(TOKENIZERS), help="comma-separated")
    parser.add_argument(
        "--sizes", default="10,40", help="slice sizes in MB, comma-separated; the first is the "
        "one every measurement uses, the others only prepare with --large-tokenizers"
    )  # fmt: skip
    parser.add_argument(
        "--large-tokenizers", default="char,gpt2",
        help="tokenizers prepared at the sizes after the first (bpe and sentencepiece are slow)",
    )  # fmt: skip
    parser.add_argument("--corpus", type=Path, help="stories from this file, not shared/data")
    parser.add_argument(
        "--gpt2-bpe-dir", type=Path,
        default=Path(os.environ.get(BPE_DIR_ENV) or SHARED_DATA / "gpt2_bpe"),
        help=f"GPT-2's encoder.json and vocab.bpe (default: ${BPE_DIR_ENV}, else shared/data)",
    )  # fmt: skip
    parser.add_argument(
        "--workers-all", type=int, default=os.cpu_count() or 1, help="the 'all cores' workers"
    )
    parser.add_argument("--repeats", type=int, default=2, help="encode_array timings, best kept")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one prepare run
    args = parser.parse_args(argv)
    if args.child:
        return args
    args.tokenizers = split_choices(parser, "--tokenizers", args.tokenizers, list(TOKENIZERS))
    args.large_tokenizers = split_choices(
        parser, "--large-tokenizers", args.large_tokenizers, list(TOKENIZERS)
    )
    try:
        args.sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--sizes: {args.sizes!r} is not a comma-separated list of whole MB")
    if not args.sizes or min(args.sizes) < 1:
        parser.error("--sizes: give at least one size of 1 MB or more, e.g. 10,40")
    if args.workers_all < 1 or args.repeats < 1:
        parser.error("--workers-all and --repeats must be at least 1")
    if args.corpus is not None and not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus} is not a file; give a TinyStories text file")
    if "gpt2" in args.tokenizers and not (args.gpt2_bpe_dir / "vocab.bpe").is_file():
        parser.error(
            f"--gpt2-bpe-dir {args.gpt2_bpe_dir} has no vocab.bpe; give GPT-2's BPE folder "
            f"or set {BPE_DIR_ENV}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    if args.child:
        return child_prepare(args.child)
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="tinygpt-tokenize-") as tmp_name:
        tmp = Path(tmp_name)
        stories = story_stream(args.corpus)
        slices = {
            size: write_slice(stories, size, tmp / f"slice-{size}mb.txt") for size in args.sizes
        }
        for data in slices.values():
            print(slice_line(args, data))
        print(flush=True)
        encode, runs = measure(args, slices, tmp)
    print(format_table(args, encode, runs))
    print(f"\nmeasured on {cpu_line()}")
    print(
        f"\ntrain s: building the tokenizer once in this process (bpe, sentencepiece: trained "
        f"on the first {TRAIN_BYTES // MB} MB, vocab {VOCAB_SIZE}; char: a pass over the "
        f"slice; gpt2: loading its files). encode: `encode_array` over the {args.sizes[0]} MB "
        f"slice, best of {args.repeats}, in one process with the native threads, then pinned to "
        "one core. prepare: `prepare_dataset` in a fresh child process and cache, wall time; "
        "bpe/sentencepiece start from the trained tokenizer (no training counted). Peak RSS: "
        "the child + workers x the largest worker's peak (an upper bound on what is alive at "
        "once).\n"
    )
    print(format_runs(runs))
    print()
    lines = [*flatness_lines(args, runs), contention_line(encode, runs)]
    for line in [*lines, target_line(args, encode, runs)]:
        print(line)
    if args.json is not None:
        write_json(args, slices, encode, runs)
    return 0


def measure(
    args: argparse.Namespace, slices: dict[int, Slice], tmp: Path
) -> tuple[dict[str, dict[str, Any]], list[PrepareRun]]:
    first = slices[args.sizes[0]]
    text = first.path.read_text(encoding="utf-8")
    encode: dict[str, dict[str, Any]] = {}
    runs: list[PrepareRun] = []
    for name in args.tokenizers:
        print(f"encoding with {name} ...", file=sys.stderr, flush=True)
        tokenizer, build_s = build(args, name, first, text)
        seconds, tokens, others = time_encode(tokenizer, text, args.repeats)
        one_core = time_encode_one_core(tokenizer, text, args.repeats)
        encode[name] = {
            "build_s": build_s,
            "vocab_size": tokenizer.vocab_size,
            "encode_s": seconds,
            "tokens": tokens,
            "mb_per_s": first.bytes / MB / seconds,
            "others_cores": others,
            "one_core_mb_per_s": None if one_core is None else first.bytes / MB / one_core,
        }
        seed = None
        if name in TRAINED:
            seed = tmp / f"{name}-tokenizer.json"
            tokenizer.save(seed)
        del tokenizer
        for size in args.sizes:
            if size != args.sizes[0] and name not in args.large_tokenizers:
                continue
            for workers in sorted({1, args.workers_all}):
                print(
                    f"preparing {name} {size} MB workers={workers} ...", file=sys.stderr, flush=True
                )
                runs.append(run_prepare(args, name, slices[size], workers, seed, tmp))
    return encode, runs


def write_json(
    args: argparse.Namespace,
    slices: dict[int, Slice],
    encode: dict[str, dict[str, Any]],
    runs: list[PrepareRun],
) -> None:
    document = {
        "machine": machine_line(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "corpus": str(args.corpus) if args.corpus else "shared/data TinyStories (V2 + V1)",
        "slices": [
            {key: value for key, value in asdict(data).items() if key != "path"}
            for data in slices.values()
        ],
        "train_bytes": TRAIN_BYTES,
        "vocab_size": VOCAB_SIZE,
        "encode": encode,
        "prepare": [{**asdict(run), "total_peak_mb": run.total_peak_mb} for run in runs],
        "gpt2_target_mb_per_s": GPT2_TARGET_MB_S,
    }
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
