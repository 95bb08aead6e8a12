"""Precision on every kind of CPU, the device and seeds a run gets, and a matmul peak that is
quick to measure on any CPU.

The CPU's features are injected (`cpu_features` replaced), so both kinds of CPU, with bf16
instructions and without, are tested on either machine."""

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from tinygpt import runtime
from tinygpt.config import ModelConfig, TrainConfig
from tinygpt.errors import ConfigError
from tinygpt.runtime import CpuFeatures, resolve_dtype, setup_runtime

CPU = torch.device("cpu")
AVX2 = CpuFeatures("AVX2", avx512_bf16=False, amx_bf16=False, native_bf16=False)
AVX512_BF16 = CpuFeatures("AVX512", avx512_bf16=True, amx_bf16=False, native_bf16=True)
# nanoGPT's 6L/384 step, where bf16 paid, and baby-shakespeare's, where it did not
LARGE_LAYER = (64 * 256, 384)
SMALL_LAYER = (12 * 64, 128)

X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse2 avx avx2 avx512f avx512bw {extra}
bugs\t\t: sysret_ss_attrs
"""
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd sve {extra}\nCPU implementer\t: 0x41\n"


@pytest.fixture
def cpu_kind(monkeypatch):
    """Play a CPU of the given features for the rest of the test."""

    def play(features: CpuFeatures) -> None:
        monkeypatch.setattr(runtime, "cpu_features", lambda: features)
        runtime.warn_emulated_bf16.cache_clear()

    yield play
    runtime.warn_emulated_bf16.cache_clear()


@pytest.mark.parametrize(
    ("text", "native"),
    [
        (X86_CPUINFO.format(extra=""), False),
        (X86_CPUINFO.format(extra="avx512_bf16"), True),
        (X86_CPUINFO.format(extra="amx_tile amx_bf16"), True),
        (ARM_CPUINFO.format(extra=""), False),
        (ARM_CPUINFO.format(extra="bf16 i8mm"), True),
    ],
    ids=["x86-avx2", "x86-avx512_bf16", "x86-amx_bf16", "arm", "arm-bf16"],
)
def test_cpu_features_read_native_bf16_from_cpuinfo_flags(tmp_path: Path, text, native):
    (tmp_path / "cpuinfo").write_text(text)
    features = runtime.read_cpu_features(tmp_path / "cpuinfo")
    assert features.native_bf16 is native
    assert features.capability == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("onednn_says", [True, False])
def test_without_cpuinfo_torchs_onednn_check_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onednn_says: bool
):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_says)
    features = runtime.read_cpu_features(tmp_path / "absent")
    assert features.avx512_bf16 is None and features.amx_bf16 is None
    assert features.native_bf16 is onednn_says
    assert "avx512_bf16 ?" in features.describe()


def test_describe_cpu_names_the_capability_and_the_bf16_flags(cpu_kind):
    cpu_kind(AVX2)
    assert runtime.describe_cpu() == "AVX2, avx512_bf16 no, amx_bf16 no: bf16 emulated (slow)"
    cpu_kind(AVX512_BF16)
    assert runtime.describe_cpu() == "AVX512, avx512_bf16 yes, amx_bf16 no: bf16 native"


@pytest.mark.parametrize("layer", [None, SMALL_LAYER, LARGE_LAYER])
def test_auto_is_float32_on_a_cpu_without_bf16_whatever_the_size(cpu_kind, layer):
    cpu_kind(AVX2)
    assert resolve_dtype("auto", CPU, layer) == torch.float32


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        (None, torch.float32),  # size unknown
        (SMALL_LAYER, torch.float32),  # bf16 was 7% slower here
        ((64 * 256, 256), torch.float32),  # narrower than where it was measured to pay
        ((8 * 256, 384), torch.float32),  # fewer tokens than where it was measured to pay
        (LARGE_LAYER, torch.bfloat16),  # 2.2x faster than fp32
        ((64 * 1024, 768), torch.bfloat16),
    ],
)
def test_auto_picks_bf16_on_a_native_bf16_cpu_only_where_it_pays(cpu_kind, layer, expected):
    cpu_kind(AVX512_BF16)
    assert resolve_dtype("auto", CPU, layer) == expected


def test_setup_runtime_weighs_the_models_matmuls(cpu_kind):
    cpu_kind(AVX512_BF16)
    large = ModelConfig(vocab_size=65, block_size=256, n_layer=1, n_head=6, n_embd=384)
    assert setup_runtime(TrainConfig(batch_size=64), large).dtype == torch.bfloat16
    assert setup_runtime(TrainConfig(batch_size=8), large).dtype == torch.float32
    assert setup_runtime(TrainConfig(batch_size=64)).dtype == torch.float32  # shape unknown


@pytest.mark.parametrize("supported", [True, False])
def test_auto_on_a_gpu_follows_what_torch_reports(monkeypatch, supported):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    expected = torch.bfloat16 if supported else torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == expected


def test_explicit_bf16_on_a_cpu_without_it_warns_once_with_the_cost(cpu_kind, caplog):
    cpu_kind(AVX2)
    with caplog.at_level(logging.WARNING, logger="tinygpt.runtime"):
        assert resolve_dtype("bfloat16", CPU) == torch.bfloat16  # obeyed: a warning, no error
        resolve_dtype("bfloat16", CPU)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "\n" not in warnings[0]
    assert "100x slower" in warnings[0] and "AVX2" in warnings[0]
    assert "--dtype float32" in warnings[0]


def test_explicit_bf16_on_a_cpu_with_it_says_nothing(cpu_kind, caplog):
    cpu_kind(AVX512_BF16)
    with caplog.at_level(logging.WARNING, logger="tinygpt.runtime"):
        assert resolve_dtype("bfloat16", CPU) == torch.bfloat16
    assert not caplog.records


def test_float16_on_a_cpu_without_bf16_advises_float32_not_bf16(cpu_kind):
    cpu_kind(AVX2)
    with pytest.raises(ConfigError) as raised:
        resolve_dtype("float16", CPU)
    message = str(raised.value)
    assert "--dtype float32" in message
    assert "--dtype bfloat16" not in message
    assert "100x" in message


def test_float16_on_a_cpu_with_bf16_advises_bf16(cpu_kind):
    cpu_kind(AVX512_BF16)
    with pytest.raises(ConfigError, match="use --dtype bfloat16 on this CPU"):
        resolve_dtype("float16", CPU)


# -- the device ---------------------------------------------------------------------------------


@pytest.fixture
def accelerators(monkeypatch):
    """Play a machine with the given accelerators (CUDA, MPS) for the rest of the test."""

    def play(cuda: bool = False, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return play


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_picks_cuda_then_mps_then_the_cpu(accelerators, cuda, mps, expected):
    accelerators(cuda=cuda, mps=mps)
    assert runtime.resolve_device("auto") == torch.device(expected)


def test_a_named_device_is_taken_as_given(accelerators):
    accelerators(cuda=True)
    assert runtime.resolve_device("cpu") == CPU
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tpu9", "device='tpu9' is not a device; use auto, cpu, cuda or mps"),
        ("cuda", "device='cuda' but CUDA is not available here; use --device cpu"),
        ("cuda:0", "device='cuda:0' but CUDA is not available here; use --device cpu"),
        ("mps", "device='mps' but MPS is not available here; use --device cpu"),
    ],
)
def test_a_device_this_machine_lacks_is_one_config_error_line(accelerators, name, message):
    accelerators()
    with pytest.raises(ConfigError) as raised:
        runtime.resolve_device(name)
    assert str(raised.value) == message


def test_seed_everything_repeats_every_generator():
    def draw() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), torch.rand(()).item()

    runtime.seed_everything(2**63 - 1)  # the largest seed a config takes
    first = draw()
    runtime.seed_everything(2**63 - 1)
    assert draw() == first


# -- the matmul peak ----------------------------------------------------------------------------


@pytest.fixture
def fake_matmul_seconds(monkeypatch):
    """Every matmul 'takes' the given time; returns the sizes measured and the spin's size."""
    calls: dict[str, list[int]] = {"measured": [], "spun": []}

    def play(seconds: float) -> dict[str, list[int]]:
        def best_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
            calls["measured"].append(a.size(0))
            return seconds

        monkeypatch.setattr(runtime, "_best_matmul_seconds", best_seconds)
        monkeypatch.setattr(
            runtime, "_keep_busy", lambda a, b, seconds: calls["spun"].append(a.size(0))
        )
        return calls

    return play


def test_the_peak_stops_growing_the_size_once_a_matmul_is_slow(fake_matmul_seconds):
    # an AVX2 CPU's bf16: 13 s a matmul at 2048 made the measurement take minutes
    calls = fake_matmul_seconds(0.02)  # the next size would take 8 x 20 ms
    flops = runtime.matmul_flops_by_size("cpu", torch.float32, max_matmul_seconds=0.05)
    assert list(flops) == calls["measured"] == [256]
    assert flops[256] == pytest.approx(2 * 256**3 / 0.02)
    assert calls["spun"] == [256]  # the spin runs the smallest, shortest matmuls


def test_the_peak_measures_every_size_on_a_fast_device(fake_matmul_seconds):
    calls = fake_matmul_seconds(1e-4)
    assert list(runtime.matmul_flops_by_size("cpu", torch.float32)) == [256, 512, 1024, 2048]
    assert calls["spun"] == [256]


def test_the_peak_measures_real_matmuls():
    flops = runtime.matmul_flops_by_size(
        "cpu", torch.float32, repeats=1, spin_seconds=0.0, max_matmul_seconds=0.0
    )
    assert list(flops) == [256] and flops[256] > 0
