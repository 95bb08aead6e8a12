"""Where and how computation runs: device, precision, autocast, seeds, threads, the matmul peak."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import platform
import random
import time
from dataclasses import dataclass

import numpy as np
import psutil
import torch

from tinygpt.atomic_files import write_text_atomic
from tinygpt.config import ModelConfig, TrainConfig
from tinygpt.data.sources import default_cache_dir
from tinygpt.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on GPUs that support it, fp32 elsewhere (CPU bf16 is a choice, see README)."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    dtype = DTYPES[name]
    if dtype == torch.float16 and device.type != "cuda":
        raise ConfigError("dtype=float16 needs a CUDA device; use --dtype bfloat16 on CPU")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bfloat16; use --dtype float16")
    return dtype


def setup_runtime(config: TrainConfig) -> Runtime:
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    if device.type == "cpu":
        keep_freed_memory_in_process()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device=device, dtype=resolve_dtype(config.dtype, device))


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


@functools.cache
def keep_freed_memory_in_process() -> bool:
    """Stop glibc from handing large freed blocks back to the kernel.

    By default glibc serves every allocation above 128 KiB with its own mmap and unmaps it on
    free, so the same activation buffers (100 MB of attention weights a layer at block 256) are
    page-faulted in afresh every step; on a 2-core CPU that was a third of attention's time.
    jemalloc or tcmalloc (LD_PRELOAD) fix this from outside; mallopt does it from inside.
    Returns False where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    # 1 GiB: above any activation of the models we train on CPUs; older glibc caps it at 32 MiB
    accepted = libc.mallopt(m_mmap_threshold, 2**30) or libc.mallopt(m_mmap_threshold, 2**25)
    return bool(accepted and libc.mallopt(m_trim_threshold, 2**31 - 1))


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
    device_type: str, dtype: torch.dtype, repeats: int = 5, spin_seconds: float = 0.5
) -> dict[int, float]:
    """Best FLOP/s for a few square sizes: small ones fit in cache, large ones amortise thread
    start-up; which wins depends on the machine, so keep the best of each."""
    sizes = (512, 1024, 2048) if device_type == "cpu" else (4096, 8192)
    generator = torch.Generator(device=device_type).manual_seed(0)  # never the global RNG
    operands = {
        size: [
            torch.randn(size, size, device=device_type, generator=generator).to(dtype)
            for _ in range(2)
        ]
        for size in sizes
    }
    _keep_busy(*operands[sizes[-1]], seconds=spin_seconds)
    return {size: _best_matmul_flops(a, b, repeats) for size, (a, b) in operands.items()}


def _keep_busy(a: torch.Tensor, b: torch.Tensor, seconds: float) -> None:
    """Run matmuls for a moment first: the first ones of a process ran at a tenth of the peak
    here (thread-pool start, clock ramp-up, page faults), whatever their size."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        torch.mm(a, b)
        synchronize(a.device.type)


def _best_matmul_flops(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    out = torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(a.device.type)
        best = min(best, time.perf_counter() - start)
    return 2.0 * a.size(0) ** 3 / best


def synchronize(device_type: str) -> None:
    """Wait for queued GPU work, so wall-clock timings measure the work and not its launch."""
    if device_type == "cuda":
        torch.cuda.synchronize()
