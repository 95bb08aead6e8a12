"""Where and how computation runs: device, precision, autocast, seeds, threads, the matmul peak."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

from tinygpt.atomic_files import write_text_atomic
from tinygpt.config import ModelConfig, TrainConfig
from tinygpt.directories import default_cache_dir
from tinygpt.errors import ConfigError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# How much slower bf16 matmuls run on a CPU without bf16 instructions, where torch has no fast
# (oneDNN) bf16 matmul and falls back to a generic loop: measured on an AVX2-only AMD EPYC,
# 2 threads, with `matmul_flops_by_size` (square sizes 256-2048; README, "Measured results").
EMULATED_BF16_SLOWDOWN = "about 100x slower than float32 (0.9-1.4 against 120 GFLOP/s on AVX2)"

# Where `auto` picks bf16 on a CPU that has it. On an AVX-512-bf16 CPU (README, "Training
# speed") bf16 autocast trained nanoGPT's 6L/384 model (width 384, 64 x 256 = 16,384 tokens a
# micro-batch) 2.2x faster than fp32, and baby-shakespeare (width 128, 12 x 64 = 768 tokens) 7%
# slower. Autocast's casts grow with the operands (tokens x width + width^2) while the matmul
# work grows with tokens x width^2, so bf16 gains with both; the crossover between the two
# measured shapes was not measured, so `auto` picks bf16 only from the shape where it paid.
BF16_MIN_WIDTH = 384
BF16_MIN_TOKENS = 16_384


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype  # the autocast dtype; parameters and optimizer state stay fp32

    @property
    def device_type(self) -> str:
        return self.device.type

    @property
    def uses_autocast(self) -> bool:
        return self.dtype != torch.float32

    @property
    def uses_grad_scaler(self) -> bool:
        """fp16 has too few exponent bits for small gradients; bf16 does not need scaling."""
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if not self.uses_autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device; use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r} but MPS is not available here; use --device cpu")
    return device


@dataclass(frozen=True)
class CpuFeatures:
    """What this CPU offers torch: the vector instructions its kernels dispatch to, and whether
    it computes bf16 in hardware. Without bf16 instructions a bf16 matmul is emulated, about
    100x slower than fp32, so the difference decides which dtype `auto` may pick."""

    capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", "DEFAULT", ...
    avx512_bf16: bool | None  # None: unknown (no /proc/cpuinfo to read)
    amx_bf16: bool | None
    native_bf16: bool

    def describe(self) -> str:
        """One line for logs and benchmark headers: `AVX2, avx512_bf16 no, amx_bf16 no, ...`."""

        def yes_no(flag: bool | None) -> str:
            return "?" if flag is None else "yes" if flag else "no"

        return (
            f"{self.capability}, avx512_bf16 {yes_no(self.avx512_bf16)}, amx_bf16 "
            f"{yes_no(self.amx_bf16)}: bf16 {'native' if self.native_bf16 else 'emulated (slow)'}"
        )


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in /proc/cpuinfo text: `flags` on x86,
    `Features` on ARM (where FEAT_BF16 shows as `bf16`)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def read_cpu_features(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> CpuFeatures:
    """Linux: the kernel's flags (avx512_bf16: Cooper Lake, Zen 4 and later; amx_bf16:
    Sapphire Rapids and later). Elsewhere torch's oneDNN check, which is looser: on x86 it
    reports AVX-512 (bw, vl, dq), where oneDNN converts bf16 with AVX-512 instead of computing
    it natively; on ARM it reports FEAT_BF16."""
    capability = torch.backends.cpu.get_cpu_capability()
    try:
        flags = parse_cpu_flags(cpuinfo_path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        flags = frozenset()
    if not flags:
        return CpuFeatures(capability, None, None, _onednn_reports_bf16())
    avx512_bf16, amx_bf16 = "avx512_bf16" in flags, "amx_bf16" in flags
    return CpuFeatures(
        capability, avx512_bf16, amx_bf16, avx512_bf16 or amx_bf16 or "bf16" in flags
    )


def _onednn_reports_bf16() -> bool:
    """torch's own check, where this torch build has oneDNN (no bf16 without it)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's CPU features, read once. Tests replace this function to play the other
    kind of CPU."""
    return read_cpu_features()


def describe_cpu() -> str:
    """This CPU's capability and bf16 support in one line, printed beside every benchmark
    figure: the same command measures a different machine on another kind of CPU."""
    return cpu_features().describe()


def resolve_dtype(
    name: str, device: torch.device, layer_matmul: tuple[int, int] | None = None
) -> torch.dtype:
    """The autocast dtype for `--dtype name` on `device`.

    `auto` picks bf16 only where the device computes it natively and it pays: on a GPU that
    supports it; on a CPU with bf16 instructions when each layer's matmuls are at least as
    large as where bf16 was measured to pay (`layer_matmul`: tokens per micro-batch, model
    width; see BF16_MIN_TOKENS). Everywhere else fp32. An explicit bf16 on a CPU without bf16
    instructions is obeyed with a warning, because it runs about 100x slower.
    """
    if name == "auto":
        return _automatic_dtype(device, layer_matmul)
    dtype = DTYPES[name]
    if dtype == torch.float16 and device.type != "cuda":
        raise ConfigError(f"dtype=float16 needs a CUDA device; {_advice_off_cuda(device)}")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bfloat16; use --dtype float16")
    if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_features().native_bf16:
        warn_emulated_bf16()
    return dtype


@functools.cache
def warn_emulated_bf16() -> None:
    """Once a process: `compare` and `finetune` resolve the dtype of every run they start."""
    log.warning(
        "dtype=bfloat16 on a CPU without bf16 instructions (%s): its matmuls run %s; "
        "--dtype float32 or auto is the fast choice here",
        describe_cpu(),
        EMULATED_BF16_SLOWDOWN,
    )


def _automatic_dtype(device: torch.device, layer_matmul: tuple[int, int] | None) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and layer_matmul is not None and cpu_features().native_bf16:
        tokens, width = layer_matmul
        if tokens >= BF16_MIN_TOKENS and width >= BF16_MIN_WIDTH:
            return torch.bfloat16
    return torch.float32


def _advice_off_cuda(device: torch.device) -> str:
    """What to use instead of float16 where there is no CUDA: bf16 only on a CPU that has it."""
    if device.type == "cpu" and cpu_features().native_bf16:
        return "use --dtype bfloat16 on this CPU (it has bf16 instructions) or float32"
    if device.type == "cpu":
        return (
            "use --dtype float32 (or auto) on this CPU: it has no bf16 instructions, so "
            f"bfloat16 matmuls would run {EMULATED_BF16_SLOWDOWN}"
        )
    return f"use --dtype float32 (or auto) on {device.type}"


def setup_runtime(config: TrainConfig, model: ModelConfig | None = None) -> Runtime:
    """The device and autocast dtype a run trains with; `model` lets `dtype auto` weigh the
    size of the matmuls (without it, `auto` is fp32 on every CPU)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    layer_matmul = None if model is None else (config.batch_size * model.block_size, model.n_embd)
    return Runtime(device=device, dtype=resolve_dtype(config.dtype, device, layer_matmul))


# bytes per model element: fp32 weights alone, or with gradients and AdamW's two moments
LOADING_BYTES_PER_ELEMENT = 4
TRAINING_BYTES_PER_ELEMENT = 16


def check_model_fits(
    config: ModelConfig,
    device: torch.device,
    bytes_per_element: float,
    fix: str = "make it smaller",
) -> None:
    """Refuse a model shape whose tensors alone exceed the memory free now, before building it.

    Building it would fail in the allocator (a traceback) or, worse, succeed on Linux's
    overcommit and be killed when the pages are touched. The model is built in CPU memory and
    then moved, so a GPU run needs room in both. The estimate leaves out activations, so a
    model that passes may still be too big; one that fails cannot fit."""
    elements = config.tensor_elements()
    for place, per_element in (
        (torch.device("cpu"), LOADING_BYTES_PER_ELEMENT),
        (device, bytes_per_element),
    ):
        needed, free = elements * per_element, free_memory(place)
        if needed > free:
            names = ("n_layer", "n_embd", "block_size", "vocab_size")  # vocab_size 0: not known
            shape = ", ".join(f"{n}={value}" for n in names if (value := getattr(config, n)))
            raise ConfigError(
                f"a model of {shape} has {elements:.3g} weights and needs {needed / 2**30:,.1f} "
                f"GiB, more than the {free / 2**30:,.1f} GiB free on {place.type}; {fix}"
            )


def free_memory(device: torch.device) -> int:
    """Bytes that can be allocated on `device` now (on CPU and MPS, RAM not in use)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@functools.cache
def measure_matmul_peak(device_type: str, dtype: torch.dtype) -> float:
    """Best FLOP/s of a square matmul on this machine: the denominator of MFU.

    Measured rather than looked up, because a CPU's peak depends on its vector units and on how
    many cores we really get. A busy neighbour can halve one measurement, which would double
    every MFU of the run, so the best value seen on this machine (same device, dtype and thread
    count) is remembered in the cache directory and used when it is higher.
    """
    measured = max(matmul_flops_by_size(device_type, dtype).values())
    key = f"{platform.node()}|{device_type}|{dtype}|{torch.get_num_threads()}"
    record = default_cache_dir() / "matmul_peaks.json"
    try:
        peaks = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        peaks = {}
    best = max(measured, float(peaks.get(key, 0.0)))
    if best > peaks.get(key, 0.0):
        with contextlib.suppress(OSError):
            record.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(record, json.dumps({**peaks, key: best}, indent=1))
    return best


def matmul_flops_by_size(
    device_type: str,
    dtype: torch.dtype,
    repeats: int = 5,
    spin_seconds: float = 0.5,
    max_matmul_seconds: float = 0.05,
) -> dict[int, float]:
    """Best FLOP/s for a few square sizes: small ones fit in cache, large ones amortise thread
    start-up; which wins depends on the machine, so keep the best of each.

    Bounded in time on any device: sizes grow while the next one (8x the work) should take
    under `max_matmul_seconds` a matmul. Without that bound, an AVX2 CPU (no bf16 instructions)
    spent 13 s on each bf16 matmul of size 2048, minutes in all, before training began.
    """
    sizes = (256, 512, 1024, 2048) if device_type == "cpu" else (4096, 8192)
    generator = torch.Generator(device=device_type).manual_seed(0)  # never the global RNG
    flops: dict[int, float] = {}
    for size in sizes:
        a, b = (
            torch.randn(size, size, device=device_type, generator=generator).to(dtype)
            for _ in range(2)
        )
        if not flops:  # the smallest size: the spin's matmuls stay short on any device
            _keep_busy(a, b, seconds=spin_seconds)
        seconds = _best_matmul_seconds(a, b, repeats)
        flops[size] = 2.0 * size**3 / seconds
        if 8 * seconds > max_matmul_seconds:
            break
    return flops


def _keep_busy(a: torch.Tensor, b: torch.Tensor, seconds: float) -> None:
    """Run matmuls for a moment first: the first ones of a process ran at a tenth of the peak
    here (thread-pool start, clock ramp-up, page faults), whatever their size."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        torch.mm(a, b)
        synchronize(a.device.type)


def _best_matmul_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    out = torch.mm(a, b)  # untimed: the first touch of this size's memory
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(a.device.type)
        best = min(best, time.perf_counter() - start)
    return best


def synchronize(device_type: str) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work and not its launch."""
    if device_type == "cuda":
        torch.cuda.synchronize()
