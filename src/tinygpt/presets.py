"""Named starting configurations. Each is a function so its docstring can say where it comes from.

Flags and `--config` files override any field of a preset.
"""

from __future__ import annotations

from collections.abc import Callable

from tinygpt.config import DataConfig, ModelConfig, RunConfig, SampleConfig, TrainConfig
from tinygpt.errors import ConfigError

DEFAULT_PRESET = "baby-shakespeare"


def baby_shakespeare() -> RunConfig:
    """nanoGPT's CPU "baby GPT" on TinyShakespeare chars: 4x128, block 64, 2000 steps (default).

    nanoGPT's README configuration of shakespeare_char for a CPU: 4 layers, 4 heads, n_embd 128,
    block 64, batch 12, no dropout, lr 1e-3 decayed over 2000 iterations, no biases. The same
    numbers as nanoGPT's, so results compare one to one (0.80M parameters)."""
    return RunConfig(
        model=ModelConfig(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False),
        data=DataConfig(source="tinyshakespeare"),
        train=TrainConfig(
            batch_size=12,
            max_iters=2000,
            lr_decay_iters=2000,
            learning_rate=1e-3,
            min_lr=1e-4,
            warmup_iters=100,
            beta2=0.99,
            weight_decay=0.1,
            grad_clip=1.0,
            eval_interval=250,
            eval_iters=200,
            log_interval=10,
        ),
        sample=SampleConfig(max_new_tokens=500, temperature=0.8, top_k=200),
        preset="baby-shakespeare",
    )


def gptiny() -> RunConfig:
    """Seed 001, GPTiny: 3 layers x 384, 4 heads, block 256, batch 64, AdamW 3e-4, 5000 steps.

    The "let's build GPT" lecture model as seed 001's table gives it: dropout 0.2, AdamW at a
    constant 3e-4, evaluated every 500 steps on 200 batches. 5.4M parameters; a GPU-sized run
    (hours on a 2-core CPU)."""
    return RunConfig(
        model=ModelConfig(block_size=256, n_layer=3, n_head=4, n_embd=384, dropout=0.2),
        data=DataConfig(source="tinyshakespeare"),
        train=TrainConfig(
            batch_size=64,
            max_iters=5000,
            learning_rate=3e-4,
            min_lr=3e-4,
            lr_schedule="constant",
            warmup_iters=0,
            weight_decay=0.01,
            beta2=0.999,
            grad_clip=0.0,
            eval_interval=500,
            eval_iters=200,
        ),
        preset="gptiny",
    )


def tinygpt_char() -> RunConfig:
    """Seed 004, TinyGPT decoder-only char model: 4 layers x 256, seq 64, Xavier init, untied head.

    Causal multi-head attention, LayerNorm, a 2-layer MLP, Xavier initialisation, sequences of 64
    characters and a separate output layer, as seed 004 describes. The seed gives no sizes; we
    chose 4 layers, 4 heads, n_embd 256 (3.2M parameters), batch 32, dropout 0.1 and lr 1e-3
    cosine-decayed over 3000 steps: minutes on a laptop CPU."""
    return RunConfig(
        model=ModelConfig(
            block_size=64,
            n_layer=4,
            n_head=4,
            n_embd=256,
            dropout=0.1,
            init="xavier",
            tie_weights=False,
        ),
        data=DataConfig(source="tinyshakespeare"),
        train=TrainConfig(
            batch_size=32,
            max_iters=3000,
            learning_rate=1e-3,
            min_lr=1e-4,
            warmup_iters=100,
            eval_interval=250,
            eval_iters=100,
        ),
        preset="tinygpt-char",
    )


PRESETS: dict[str, Callable[[], RunConfig]] = {
    "baby-shakespeare": baby_shakespeare,
    "gptiny": gptiny,
    "tinygpt-char": tinygpt_char,
}


def get_preset(name: str) -> RunConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}; choose one of {', '.join(PRESETS)} (`tinygpt presets`)"
        ) from None


def describe_preset(name: str) -> str:
    """The first line of the preset's docstring: the summary `tinygpt presets` shows."""
    return (PRESETS[name].__doc__ or "").strip().splitlines()[0]
