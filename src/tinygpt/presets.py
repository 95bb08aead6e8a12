"""Named starting configurations. Each is a function so its docstring can say where it comes from.

Several follow a written spec of a model to reproduce, described in docs/specs.md: the
hybrid-attention GPT, GPTiny, the dialog chatbot, the small TinyStories GPT and the char-level
TinyGPT. Flags and `--config` files override any field of a preset.
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


def shakespeare_fast() -> RunConfig:
    """The best TinyShakespeare recipe for about 3 minutes of training on 2 CPU cores.

    baby-shakespeare's 4 x 128 model and 64-character context at batch 32, trained with Muon on
    the blocks' matrices (AdamW on the rest) on a cosine schedule, no dropout: 1,400 steps,
    about 3 minutes on a 2-core AVX2 EPYC. Chosen by benchmarks/budget_sweep.py over 66
    recipes (shape, context x batch, optimizer, schedule, learning rates, the speedruns' model
    ideas), each trained for the steps its measured step time fits in the budget; the README's
    "Time to loss" gives the sweep and the time_to_loss figures."""
    return RunConfig(
        model=ModelConfig(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False),
        data=DataConfig(source="tinyshakespeare"),
        train=TrainConfig(
            batch_size=32,
            max_iters=1400,
            lr_decay_iters=1400,
            optimizer="muon",
            muon_lr=0.02,
            learning_rate=3e-3,
            min_lr=3e-4,
            warmup_iters=100,
            beta2=0.99,
            weight_decay=0.1,
            grad_clip=1.0,
            eval_interval=350,
            eval_iters=50,
            log_interval=10,
        ),
        sample=SampleConfig(max_new_tokens=500, temperature=0.8, top_k=200),
        preset="shakespeare-fast",
    )


def gptiny() -> RunConfig:
    """The GPTiny spec: 3 layers x 384, 4 heads, block 256, batch 64, AdamW 3e-4, 5000 steps.

    The "let's build GPT" lecture model as the GPTiny spec's table gives it: dropout 0.2, AdamW at a
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
    """The char-level TinyGPT spec, sized by us: 4 layers x 256, seq 64, Xavier init, untied head.

    Causal multi-head attention, LayerNorm, a 2-layer MLP, Xavier initialisation, sequences of 64
    characters and a separate output layer, as the spec describes. The spec gives no sizes; we
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


def tinystories_small() -> RunConfig:
    """The TinyStories-small spec, GPT-2's tokenizer on TinyStories: 4 layers x 256, block 128.

    The spec's table: vocab 50,304 (GPT-2's 50,257 padded to a multiple of 64), 4 layers, 4 heads,
    n_embd 256, dropout 0.1, biases on, AdamW (beta2 0.95, weight decay 0.1), lr 1e-4 to 1e-5
    on a cosine schedule with warm restarts, batch 32 with 32 accumulation steps (131k tokens a
    step), bf16 autocast, label smoothing 0.1. 16.9M parameters, 12.9M of them the embedding.
    The dtype is `auto`, which gives the spec's bf16 where the device computes it natively and
    pays (a GPU); a CPU without bf16 instructions would run it about 100x slower.
    Reads hf:roneneldan/TinyStories; offline, pass --data with local TinyStories text."""
    return RunConfig(
        model=ModelConfig(
            vocab_size=50304, block_size=128, n_layer=4, n_head=4, n_embd=256, dropout=0.1,
            bias=True,
        ),
        data=DataConfig(source="hf:roneneldan/TinyStories", tokenizer="gpt2"),
        train=TrainConfig(
            batch_size=32, gradient_accumulation_steps=32, max_iters=10_000,
            learning_rate=1e-4, min_lr=1e-5, warmup_iters=200, lr_schedule="cosine_restarts",
            restart_iters=2_000, restart_mult=2, beta2=0.95, weight_decay=0.1, grad_clip=1.0,
            dtype="auto", label_smoothing=0.1, eval_interval=250, eval_iters=50,
        ),
        sample=SampleConfig(prompt="Once upon a time", max_new_tokens=200, top_k=50),
        preset="tinystories-small",
    )  # fmt: skip


def dialog_chatbot() -> RunConfig:
    """The dialog-chatbot spec: 8 layers x 384, 6 heads, SentencePiece 32k, DailyDialog.

    The spec's table: n_embd 384, 6 heads (64 dimensions each), 8 layers, FFN 1536, sequences
    of 128 tokens, a SentencePiece BPE of ~32,000 tokens with <s>/<sep>/</s> markers, dropout
    0.05, batch 32, lr 1e-4 cosine with warm-up, gradient clipping 1.0, early stopping on the
    validation loss; an adaptive softmax output (its README's "efficient vocabulary handling":
    the 2,000 most frequent tokens scored directly, the rest in two clusters of 6,000 and
    24,000, so it cannot share the embedding); conversations rendered as
    `<s> User: ... <sep> Bot: ... </s>` and the loss taken on Bot turns only. Reads DailyDialog +
    ProSocial Dialog from the Hugging Face hub; offline, pass --data with local copies joined by
    `+` (e.g. the DailyDialog folder + prosocial JSON)."""
    return RunConfig(
        model=ModelConfig(
            block_size=128, n_layer=8, n_head=6, n_embd=384, ffn_hidden=1536, dropout=0.05,
            output="adaptive", tie_weights=False,
        ),
        data=DataConfig(
            source="hf:daily_dialog+hf:allenai/prosocial-dialog",
            tokenizer="sentencepiece",
            tokenizer_vocab_size=32_000,
            format="dialog",
        ),
        train=TrainConfig(
            batch_size=32, max_iters=4_000, learning_rate=1e-4, min_lr=1e-5, warmup_iters=200,
            grad_clip=1.0, weight_decay=0.1, beta2=0.99, dtype="auto", patience=5,
            eval_interval=200, eval_iters=50, loss_on="bot",
        ),
        sample=SampleConfig(max_new_tokens=60, temperature=0.7, top_k=50),
        preset="dialog-chatbot",
    )  # fmt: skip


def _tinystories_chars(preset: str, **model_fields: object) -> RunConfig:
    """The hybrid-attention spec's setting, shared by the four TinyStories variant presets so
    they differ only in the blocks: characters of the first 5,000 TinyStories stories, 3 epochs,
    4 layers x 192, 6 heads, block 256 (about 1.8M parameters; roughly 25 minutes a run on 2 CPU
    cores)."""
    return RunConfig(
        model=ModelConfig(
            block_size=256, n_layer=4, n_head=6, n_embd=192, dropout=0.1, **model_fields
        ),
        data=DataConfig(
            source="hf:roneneldan/TinyStories", tokenizer="char", unknown_chars="unk",
            max_documents=5_000,
        ),
        train=TrainConfig(
            batch_size=32, epochs=3, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
            weight_decay=0.1, beta2=0.99, grad_clip=1.0, eval_interval=250, eval_iters=20,
        ),
        sample=SampleConfig(prompt="Once upon a time", max_new_tokens=300, top_k=50),
        preset=preset,
    )  # fmt: skip


def hybrid_tinystories() -> RunConfig:
    """The hybrid-attention spec on TinyStories chars: global GQA + local additive, GEGLU.

    Each block's attention blends grouped-query global attention (6 query heads sharing 2
    key/value heads) with additive attention over the last 16 characters, by a learned gate per
    head; the feed-forward is GELU-gated (the spec's GatedFeedForward). Compare it with
    `baseline-tinystories` (`tinygpt compare`). Offline, pass --data with local TinyStories."""
    return _tinystories_chars(
        "hybrid-tinystories",
        attention="hybrid", n_kv_head=2, local_window=16, local_dim=16, ffn="geglu",
    )  # fmt: skip


def baseline_tinystories() -> RunConfig:
    """The GPT-2 baseline for hybrid-tinystories: same data, size and budget, plain blocks.

    Multi-head attention with learned positions, LayerNorm and a GELU MLP: what the
    hybrid-attention spec's "Baseline GPT" row should have been measured with."""
    return _tinystories_chars("baseline-tinystories")


def gqa_tinystories() -> RunConfig:
    """baseline-tinystories with grouped-query attention: 6 query heads share 2 key/value heads.

    Ainslie et al. 2023: a third of the KV cache, nearly the same quality (the claim to test)."""
    return _tinystories_chars("gqa-tinystories", n_kv_head=2)


def modern_tinystories() -> RunConfig:
    """baseline-tinystories with the Llama block: RMSNorm, RoPE, SwiGLU, no biases.

    The strongest plain baseline a researcher would expect a new attention to beat."""
    return _tinystories_chars(
        "modern-tinystories", norm="rmsnorm", position="rope", ffn="swiglu", bias=False
    )


def tinystories_fast() -> RunConfig:
    """The best TinyStories recipe for about 15 minutes of training on 2 CPU cores.

    A byte-level BPE of 4,096 tokens (chosen by bits per byte of the validation stories over
    characters, 1,024, 2,048 and GPT-2's 50,257), 4 layers x 128 with the Llama block (RMSNorm,
    RoPE, SwiGLU, no biases), 128-token context at batch 32, Muon on the blocks' matrices and
    AdamW on the rest, cosine, dropout 0.1: 1,800 steps, about 15 minutes on a 2-core AVX2 EPYC.
    The README's "Time to loss" gives the sweeps. Reads the first 20,000 stories of
    hf:roneneldan/TinyStories; offline, pass --data with local TinyStories."""
    return RunConfig(
        model=ModelConfig(
            block_size=128, n_layer=4, n_head=4, n_embd=128, dropout=0.1, bias=False,
            norm="rmsnorm", position="rope", ffn="swiglu",
        ),
        data=DataConfig(
            source="hf:roneneldan/TinyStories", tokenizer="bpe", tokenizer_vocab_size=4096,
            max_documents=20_000,
        ),
        train=TrainConfig(
            batch_size=32, max_iters=1800, lr_decay_iters=1800, optimizer="muon", muon_lr=0.02,
            learning_rate=3e-3, min_lr=3e-4, warmup_iters=100, beta2=0.99, weight_decay=0.1,
            grad_clip=1.0, eval_interval=360, eval_iters=25,
        ),
        sample=SampleConfig(prompt="Once upon a time", max_new_tokens=200, top_k=50),
        preset="tinystories-fast",
    )  # fmt: skip


PRESETS: dict[str, Callable[[], RunConfig]] = {
    "baby-shakespeare": baby_shakespeare,
    "shakespeare-fast": shakespeare_fast,
    "gptiny": gptiny,
    "tinygpt-char": tinygpt_char,
    "tinystories-small": tinystories_small,
    "dialog-chatbot": dialog_chatbot,
    "baseline-tinystories": baseline_tinystories,
    "gqa-tinystories": gqa_tinystories,
    "hybrid-tinystories": hybrid_tinystories,
    "modern-tinystories": modern_tinystories,
    "tinystories-fast": tinystories_fast,
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
