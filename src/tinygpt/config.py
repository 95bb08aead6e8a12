"""The typed configuration tree of a run: `RunConfig(model, data, train, sample)`, each field
with its default, its help text and the checks its value must pass.

How text (flags, TOML, a run's config.json) becomes this tree, and in which order the layers
apply, is in `tinygpt.config_parsing`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from tinygpt.errors import ConfigError

SECTIONS = ("model", "data", "train", "sample")
MIN_TRAINED_VOCAB = 300  # a byte-level BPE needs its 256 byte tokens plus special tokens
MAX_TOKEN_ID = 2**32 - 1  # token files are uint16 or uint32
# torch takes seeds below 2**64, and tinygpt derives more seeds by adding small offsets (seed + 1
# for evaluation batches, + k for compare's k-th seed and the k-th of --num-samples): a seed
# below 2**63 leaves every derived one in range
SEED_LIMIT = 2**63


Value = TypeVar("Value")


def option(default: Value, help_text: str) -> Value:
    """A field with the help text that `tinygpt train --help` shows beside its flag: written
    once, beside the field, and read through `field_help`."""
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class ModelConfig:
    """Shape and regularisation of the decoder-only GPT."""

    vocab_size: int = option(0, "0: the tokenizer's; larger pads the embedding (e.g. 50304)")
    block_size: int = option(256, "context length in tokens")
    n_layer: int = option(6, "transformer blocks")
    n_head: int = option(6, "attention heads; must divide n_embd")
    n_kv_head: int = option(
        0, "key/value heads (grouped-query attention); 0: n_head, 1: multi-query"
    )
    attention: Literal["global", "hybrid"] = option(
        "global", "hybrid: + local additive branch (preset hybrid-tinystories)"
    )
    local_window: int = option(16, "hybrid: tokens the local branch sees, the current one included")
    local_dim: int = option(
        16, "hybrid: width of the additive scorer v^T tanh(W_q q + W_k k) per head"
    )
    n_embd: int = option(384, "width of the residual stream")
    ffn_hidden: int = option(0, "0: 4 * n_embd, or 8/3 * n_embd (to 64) for the gated kinds")
    ffn: Literal["mlp", "swiglu", "geglu"] = option(
        "mlp", "GELU MLP, or a gated one (Shazeer 2020)"
    )
    activation: Literal["gelu", "gelu_tanh", "relu2"] = option(
        "gelu", "mlp, geglu: exact GELU or GPT-2's tanh; mlp: relu2, ReLU squared (Primer)"
    )
    dropout: float = option(0.2, "on embeddings, attention weights and residual branches")
    attention_dropout: bool = option(
        True, "false: dropout skips the attention weights, so CPU attention keeps its fused kernel"
    )
    bias: bool = option(True, "biases in Linear and LayerNorm layers")
    norm: Literal["layernorm", "rmsnorm"] = option("layernorm", "rmsnorm: the Llama recipe")
    position: Literal["learned", "rope"] = option("learned", "learned embeddings or rotary (RoPE)")
    rope_theta: float = option(10000.0, "RoPE base: larger stretches the longest wavelength")
    tie_weights: bool = option(True, "share the token embedding with the output head")
    output: Literal["softmax", "adaptive"] = option(
        "softmax", "adaptive: Grave et al. 2017 (preset dialog-chatbot)"
    )
    adaptive_cutoffs: str = option(
        "", 'adaptive: ascending token ids ending each cluster; "": V/16,V/4'
    )
    init: Literal["gpt2", "xavier"] = option("gpt2", "weight initialisation scheme")
    zero_init_proj: bool = option(
        False, "attention and MLP output projections start at zero (modded-nanogpt)"
    )
    qk_norm: bool = option(False, "RMS-normalise each head's queries and keys (OLMo 2)")
    logit_softcap: float = option(0.0, "logits = cap * tanh(logits / cap) (Gemma 2); 0: off")
    embed_mix: bool = option(
        False, "each block reads a * x + b * x0, learned, x0 the embedding (modded-nanogpt)"
    )

    def __post_init__(self) -> None:
        _check_positive(self, "block_size", "n_layer", "n_head", "n_embd")
        _check_non_negative(self, "vocab_size", "ffn_hidden", "n_kv_head")
        _check_fraction(self, "dropout")
        _check_positive(self, "rope_theta", "local_window", "local_dim")
        _check_non_negative(self, "logit_softcap")
        self._check_adaptive_output()
        if self.activation == "relu2" and self.ffn != "mlp":
            raise ConfigError(
                f"activation=relu2 is for ffn=mlp, not ffn={self.ffn}; use ffn=mlp or "
                "activation=gelu"
            )
        if self.position == "rope" and self.head_dim % 2:
            raise ConfigError(
                f"RoPE rotates channel pairs, but the head dimension n_embd / n_head = "
                f"{self.head_dim} is odd; choose n_embd and n_head with an even quotient"
            )
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "pick n_head so that n_embd / n_head is a whole number"
            )

        if self.n_head % self.kv_heads:
            raise ConfigError(
                f"n_kv_head={self.n_kv_head} does not divide n_head={self.n_head}; each key/value "
                "head must serve the same number of query heads"
            )

    def _check_adaptive_output(self) -> None:
        if self.output != "adaptive":
            return
        if self.logit_softcap:
            raise ConfigError(
                "logit_softcap caps logits, but adaptive softmax outputs log-probabilities; "
                "add --logit_softcap 0 or --output softmax"
            )
        if self.tie_weights:
            raise ConfigError(
                "adaptive softmax has its own output layers and cannot share the token "
                "embedding; add --tie_weights false"
            )
        cutoffs = self.cutoffs  # parses, so a typo fails here and not mid-training
        if self.vocab_size and (
            cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1 or cutoffs[-1] >= self.vocab_size
        ):
            raise ConfigError(
                f"adaptive_cutoffs={self.adaptive_cutoffs!r} must be ascending token ids between "
                f"1 and vocab_size - 1 = {self.vocab_size - 1}"
            )

    @property
    def cutoffs(self) -> list[int]:
        """Adaptive softmax cluster boundaries: the head predicts ids below the first cutoff
        directly, each tail cluster the ids up to the next. By default V/16 and V/4 (so the
        32k SentencePiece vocabulary gets 2000 and 8000, close to Grave et al.'s setting)."""
        if not self.adaptive_cutoffs.strip():
            return [max(1, self.vocab_size // 16), max(2, self.vocab_size // 4)]
        try:
            return [int(part) for part in self.adaptive_cutoffs.split(",")]
        except ValueError:
            raise ConfigError(
                f"adaptive_cutoffs={self.adaptive_cutoffs!r} must be comma-separated whole "
                "numbers, e.g. 2000,10000"
            ) from None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def tensor_elements(self) -> int:
        """Elements of the tensors a GPT of this shape allocates, to leading order: embeddings,
        position tables (RoPE's cos/sin in every layer) and weight matrices; biases, norms and
        the hybrid's scoring vectors are left out, so it never overestimates. Arithmetic, not a
        model, so a shape too big for memory is refused before anything is allocated. Counts
        no token embedding while vocab_size is 0 (not yet known)."""
        C, V, T = self.n_embd, self.vocab_size, self.block_size
        qkv_width = C + 2 * self.kv_heads * self.head_dim
        if self.attention == "hybrid":  # the fused projection also makes the local features
            qkv_width += (self.n_head + self.kv_heads) * self.local_dim
        attention = C * qkv_width + C * C  # fused q, k, v, then the output projection
        ffn = (2 if self.ffn == "mlp" else 3) * C * self.ffn_width
        positions = T * C if self.position == "learned" else self.n_layer * T * self.head_dim
        untied_head = V * C if self.output == "softmax" and not self.tie_weights else 0
        return V * C + untied_head + positions + self.n_layer * (attention + ffn)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def attention_weight_dropout(self) -> float:
        """The dropout rate on the attention weights. torch's fused CPU attention kernels take
        no dropout, so on a CPU a non-zero rate makes training write the T x T weights out
        (`train/cpu_speedups.py`); README "Time to loss" measures what that costs."""
        return self.dropout if self.attention_dropout else 0.0

    @property
    def ffn_width(self) -> int:
        """Hidden width; gated kinds default to 2/3 of 4 n_embd (rounded up to a multiple of
        64), so their three matrices hold as many weights as the plain MLP's two."""
        if self.ffn_hidden:
            return self.ffn_hidden
        if self.ffn == "mlp":
            return 4 * self.n_embd
        return -(-8 * self.n_embd // 3 // 64) * 64


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it becomes tokens."""

    source: str = option(
        "tinyshakespeare", "corpus name, file, folder, glob, JSON(L), URL, or hf:NAME"
    )
    tokenizer: Literal["char", "bpe", "sentencepiece", "gpt2"] = option("char", "text to token ids")
    tokenizer_vocab_size: int = option(8192, "bpe and sentencepiece: vocabulary size to train")
    gpt2_bpe_dir: str = option("", "gpt2 offline: folder of encoder.json + vocab.bpe")
    unknown_chars: Literal["error", "unk"] = option(
        "error", "char: characters outside the vocabulary"
    )
    val_fraction: float = option(
        0.1, "share held out for validation (by document where there are any)"
    )
    text_field: str = option("text", "JSON/JSONL files and Hugging Face datasets: the text column")
    format: Literal["text", "dialog"] = option(
        "text", "dialog: <s> User: ... <sep> Bot: ... </s> turns"
    )
    max_documents: int = option(0, "use only the first N documents of each split; 0: all")
    workers: int = option(0, "processes that tokenize in parallel; 0: one per core")

    def __post_init__(self) -> None:
        if not self.source.strip():
            raise ConfigError("data source is empty; give --data PATH_OR_URL or a corpus name")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction} must be between 0 and 1")
        _check_non_negative(self, "max_documents", "workers")
        if self.tokenizer in ("bpe", "sentencepiece") and not (
            MIN_TRAINED_VOCAB <= self.tokenizer_vocab_size <= MAX_TOKEN_ID + 1
        ):
            raise ConfigError(
                f"tokenizer_vocab_size={self.tokenizer_vocab_size} must be between "
                f"{MIN_TRAINED_VOCAB} (the 256 bytes and special tokens) and {MAX_TOKEN_ID + 1} "
                "(the largest id a uint32 token file holds)"
            )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, precision, evaluation and bookkeeping (nanoGPT's names)."""

    seed: int = option(1337, "model init, dropout and batch order")
    device: str = option("auto", "auto, cpu, cuda, cuda:N, mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: bool = option(False, "torch.compile the model")
    threads: int = option(0, "CPU threads for torch; 0: leave torch's default")
    batch_size: int = option(64, "sequences per micro-batch, across all ranks under torchrun")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    max_iters: int = option(5000, "optimizer steps in all")
    epochs: float = option(0.0, "> 0: set max_iters to read the train split this many times")
    learning_rate: float = option(1e-3, "peak, reached after warm-up")
    min_lr: float = option(1e-4, "floor of the decay")
    warmup_iters: int = option(100, "linear warm-up steps")
    lr_decay_iters: int = option(0, "0: decay over max_iters")
    lr_schedule: Literal["cosine", "cosine_restarts", "constant", "wsd"] = option(
        "cosine", "wsd: warm-up, flat at learning_rate, then a 1-sqrt decay to min_lr"
    )
    decay_fraction: float = option(
        0.2, "wsd: the share of lr_decay_iters (or max_iters) at the end that decays"
    )
    restart_iters: int = option(0, "cosine_restarts: length of the first cycle (0: lr_decay_iters)")
    restart_mult: int = option(1, "cosine_restarts: each cycle is this many times longer")
    weight_decay: float = option(0.1, "AdamW and Muon, on matrices and embeddings only")
    beta1: float = option(0.9, "AdamW")
    beta2: float = option(0.99, "AdamW")
    optimizer: Literal["adamw", "muon"] = option(
        "adamw", "muon: Muon on the blocks' matrices, AdamW on the rest"
    )
    muon_lr: float = option(0.02, "optimizer=muon: Muon's peak lr (the schedule scales it)")
    muon_momentum: float = option(0.95, "optimizer=muon: Muon's Nesterov momentum")
    grad_clip: float = option(1.0, "0: no clipping")
    label_smoothing: float = option(
        0.0, "training loss only; evaluation reports plain cross-entropy"
    )
    loss_on: Literal["all", "bot"] = option("all", "bot: learn only the Bot turns of dialog data")
    eval_interval: int = option(250, "evaluate and save a checkpoint every this many steps")
    keep_checkpoints: int = option(
        0, "also keep the N newest checkpoints (best and last always stay)"
    )
    eval_iters: int = option(200, "batches per split in each evaluation")
    log_interval: int = option(10, "steps between train-loss lines in metrics.jsonl")
    patience: int = option(
        0, "stop after this many evaluations without a better val loss; 0: never"
    )
    gradient_checkpointing: bool = option(
        False, "recompute block activations in backward: less memory"
    )
    distributed: Literal["ddp", "fsdp"] = option(
        "ddp", "under torchrun: replicate or shard the model"
    )
    logger: Literal["none", "tensorboard", "wandb"] = option(
        "none", "also log to TensorBoard (RUN_DIR/tensorboard) or Weights & Biases"
    )

    def __post_init__(self) -> None:
        check_seed(self.seed, f"seed={self.seed}")
        _check_positive(
            self,
            "batch_size",
            "gradient_accumulation_steps",
            "max_iters",
            "learning_rate",
            "eval_interval",
            "eval_iters",
            "log_interval",
            "restart_mult",
            "muon_lr",
        )
        _check_non_negative(
            self,
            "threads",
            "min_lr",
            "warmup_iters",
            "lr_decay_iters",
            "restart_iters",
            "weight_decay",
            "grad_clip",
            "patience",
            "epochs",
            "keep_checkpoints",
        )
        _check_fraction(self, "beta1", "beta2", "label_smoothing", "muon_momentum")
        if not 0 < self.decay_fraction <= 1:
            raise ConfigError(f"decay_fraction={self.decay_fraction} must be in (0, 1]")
        if self.optimizer == "muon" and self.distributed == "fsdp":
            raise ConfigError(
                "optimizer=muon orthogonalises whole matrices, which distributed=fsdp shards "
                "across ranks; use distributed=ddp or optimizer=adamw"
            )
        if self.min_lr > self.learning_rate:
            raise ConfigError(
                f"min_lr={self.min_lr} is above learning_rate={self.learning_rate}; "
                "min_lr is the floor the schedule decays to"
            )


# the dtype of the weights decoding steps read (tinygpt.generate.fast_weights)
DecodingPrecision = Literal["auto", "float16", "float32"]


@dataclass(frozen=True)
class SampleConfig:
    """Defaults for `tinygpt sample` and the sample printed after training."""

    prompt: str = option("\n", "text the sample continues")
    max_new_tokens: int = option(500, "tokens to generate")
    temperature: float = option(0.8, "0: greedy")
    top_k: int = option(200, "0: no top-k filter")
    top_p: float = option(1.0, "1.0: no nucleus filter")
    sample_seed: int = option(1337, "same seed, same text")
    # a text Literal, immutable like the others: ruff cannot see through the alias
    precision: DecodingPrecision = option(  # noqa: RUF009
        "auto",
        "weights decoding reads: float16 (faster for big models), float32 (exact), auto: by size",
    )

    def __post_init__(self) -> None:
        check_seed(self.sample_seed, f"sample_seed={self.sample_seed}")
        _check_non_negative(self, "max_new_tokens", "temperature", "top_k")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p={self.top_p} must be in (0, 1]")


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    preset: str = ""  # the preset this run started from, for the record

    def __post_init__(self) -> None:
        if self.model.output == "adaptive" and self.train.label_smoothing:
            raise ConfigError(
                "label smoothing needs the full softmax over the vocabulary; with "
                "output=adaptive set --label_smoothing 0"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------------------------
# Validation helpers


def _check_positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ConfigError(f"{name}={value} must be greater than 0")


def _check_non_negative(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 0:
            raise ConfigError(f"{name}={value} must not be negative")


def check_seed(seed: int, shown_as: str) -> None:
    """Refuse a seed torch cannot take (or one whose derived seeds it could not): see SEED_LIMIT.
    `shown_as` is how the error names it (`seed=-1`, `--seed -1`)."""
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"{shown_as} must be a whole number from 0 to 2**63 - 1")


def _check_fraction(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name}={value} must be in [0, 1)")
