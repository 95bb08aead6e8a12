"""The typed configuration tree of a run, and how text (flags, TOML, JSON) becomes it.

Precedence, lowest first: dataclass defaults < ``--preset NAME`` < ``--config run.toml`` < flags.
Every value is parsed by its field's type; no user text is ever evaluated as code.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tinygpt.errors import ConfigError

SECTIONS = ("model", "data", "train", "sample")
MIN_TRAINED_VOCAB = 300  # a byte-level BPE needs its 256 byte tokens plus special tokens
MAX_TOKEN_ID = 2**32 - 1  # token files are uint16 or uint32
# torch takes seeds below 2**64, and tinygpt derives more seeds by adding small offsets (seed + 1
# for evaluation batches, + k for compare's k-th seed and the k-th of --num-samples): a seed
# below 2**63 leaves every derived one in range
SEED_LIMIT = 2**63


@dataclass(frozen=True)
class ModelConfig:
    """Shape and regularisation of the decoder-only GPT."""

    vocab_size: int = 0  # 0: the tokenizer's; larger pads the embedding (e.g. 50304)
    block_size: int = 256  # context length in tokens
    n_layer: int = 6  # transformer blocks
    n_head: int = 6  # attention heads; must divide n_embd
    n_kv_head: int = 0  # key/value heads (grouped-query attention); 0: n_head, 1: multi-query
    attention: Literal["global", "hybrid"] = "global"  # hybrid: + local additive branch (seed 000)
    local_window: int = 16  # hybrid: tokens the local branch sees, the current one included
    local_dim: int = 16  # hybrid: width of the additive scorer v^T tanh(W_q q + W_k k) per head
    n_embd: int = 384  # width of the residual stream
    ffn_hidden: int = 0  # 0: 4 * n_embd, or 8/3 * n_embd (to 64) for the gated kinds
    ffn: Literal["mlp", "swiglu", "geglu"] = "mlp"  # GELU MLP, or a gated one (Shazeer 2020)
    activation: Literal["gelu", "gelu_tanh"] = "gelu"  # mlp, geglu: exact GELU or GPT-2's tanh
    dropout: float = 0.2  # on embeddings, attention weights and residual branches
    bias: bool = True  # biases in Linear and LayerNorm layers
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"  # rmsnorm: the Llama recipe
    position: Literal["learned", "rope"] = "learned"  # learned embeddings or rotary (RoPE)
    rope_theta: float = 10000.0  # RoPE base: larger stretches the longest wavelength
    tie_weights: bool = True  # share the token embedding with the output head
    output: Literal["softmax", "adaptive"] = "softmax"  # adaptive: Grave et al. 2017 (seed 002)
    adaptive_cutoffs: str = ""  # adaptive: ascending token ids ending each cluster; "": V/16,V/4
    init: Literal["gpt2", "xavier"] = "gpt2"  # weight initialisation scheme

    def __post_init__(self) -> None:
        _check_positive(self, "block_size", "n_layer", "n_head", "n_embd")
        _check_non_negative(self, "vocab_size", "ffn_hidden", "n_kv_head")
        _check_fraction(self, "dropout")
        _check_positive(self, "rope_theta", "local_window", "local_dim")
        self._check_adaptive_output()
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

    source: str = "tinyshakespeare"  # corpus name, file, folder, glob, JSON(L), URL, or hf:NAME
    tokenizer: Literal["char", "bpe", "sentencepiece", "gpt2"] = "char"  # text to token ids
    tokenizer_vocab_size: int = 8192  # bpe and sentencepiece: vocabulary size to train
    gpt2_bpe_dir: str = ""  # gpt2 offline: folder of encoder.json + vocab.bpe
    unknown_chars: Literal["error", "unk"] = "error"  # char: characters outside the vocabulary
    val_fraction: float = 0.1  # share held out for validation (by document where there are any)
    text_field: str = "text"  # JSON/JSONL files and Hugging Face datasets: the text column
    format: Literal["text", "dialog"] = "text"  # dialog: <s> User: ... <sep> Bot: ... </s> turns
    max_documents: int = 0  # use only the first N documents of each split; 0: all
    workers: int = 0  # processes that tokenize in parallel; 0: one per core

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

    seed: int = 1337  # model init, dropout and batch order
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: bool = False  # torch.compile the model
    threads: int = 0  # CPU threads for torch; 0: leave torch's default
    batch_size: int = 64  # sequences per micro-batch, across all ranks under torchrun
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    max_iters: int = 5000  # optimizer steps in all
    epochs: float = 0.0  # > 0: set max_iters to read the train split this many times
    learning_rate: float = 1e-3  # peak, reached after warm-up
    min_lr: float = 1e-4  # floor of the decay
    warmup_iters: int = 100  # linear warm-up steps
    lr_decay_iters: int = 0  # 0: decay over max_iters
    lr_schedule: Literal["cosine", "cosine_restarts", "constant"] = "cosine"
    restart_iters: int = 0  # cosine_restarts: length of the first cycle (0: lr_decay_iters)
    restart_mult: int = 1  # cosine_restarts: each cycle is this many times longer
    weight_decay: float = 0.1  # AdamW, on matrices and embeddings only
    beta1: float = 0.9  # AdamW
    beta2: float = 0.99  # AdamW
    grad_clip: float = 1.0  # 0: no clipping
    label_smoothing: float = 0.0  # training loss only; evaluation reports plain cross-entropy
    loss_on: Literal["all", "bot"] = "all"  # bot: learn only the Bot turns of dialog data
    eval_interval: int = 250  # evaluate and save a checkpoint every this many steps
    keep_checkpoints: int = 0  # also keep the N newest checkpoints (best and last always stay)
    eval_iters: int = 200  # batches per split in each evaluation
    log_interval: int = 10  # steps between train-loss lines in metrics.jsonl
    patience: int = 0  # stop after this many evaluations without a better val loss; 0: never
    gradient_checkpointing: bool = False  # recompute block activations in backward: less memory
    distributed: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate or shard the model

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
        _check_fraction(self, "beta1", "beta2", "label_smoothing")
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

    prompt: str = "\n"  # text the sample continues
    max_new_tokens: int = 500  # tokens to generate
    temperature: float = 0.8  # 0: greedy
    top_k: int = 200  # 0: no top-k filter
    top_p: float = 1.0  # 1.0: no nucleus filter
    sample_seed: int = 1337  # same seed, same text
    # weights decoding reads: float16 (faster for big models), float32 (exact), auto: by size
    precision: DecodingPrecision = "auto"

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


# ----------------------------------------------------------------------------------------------
# Typed parsing of user text


def section_classes() -> dict[str, type]:
    return {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "sample": SampleConfig}


@functools.cache  # resolving the annotations is most of what building the CLI's parser costs
def field_types(section_cls: type) -> dict[str, Any]:
    """Resolved annotations of a config dataclass (the module uses postponed annotations)."""
    hints = typing.get_type_hints(section_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(section_cls)}


def all_fields() -> dict[str, tuple[str, Any, Any]]:
    """Map every field name to (section, type, default). Field names are unique across sections."""
    found: dict[str, tuple[str, Any, Any]] = {}
    for section, cls in section_classes().items():
        defaults = cls()  # type: ignore[call-arg]
        for name, annotation in field_types(cls).items():
            assert name not in found, f"config field {name} is defined twice"
            found[name] = (section, annotation, getattr(defaults, name))
    return found


def parse_value(name: str, annotation: Any, raw: Any) -> Any:
    """Convert `raw` (text from a flag, or a TOML/JSON value) to the field's type."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if raw not in choices:
            raise ConfigError(f"{name}={raw!r} is not one of {', '.join(map(str, choices))}")
        return raw
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw is None or (isinstance(raw, str) and raw.lower() == "none"):
            return None
        return parse_value(name, options[0], raw)
    if annotation is bool:
        return _parse_bool(name, raw)
    if annotation is int:
        return _parse_int(name, raw)
    if annotation is float:
        return _parse_float(name, raw)
    if annotation is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{name}={raw!r} must be text")
        return raw
    raise TypeError(f"unsupported config type {annotation!r} for {name}")


def _parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be true or false")


def _parse_int(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"{name}={raw!r} must be a whole number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    try:
        return int(str(raw).replace("_", ""))
    except ValueError:
        pass
    try:  # allow 1e4 and 5000.0 for whole numbers
        value = float(str(raw))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} must be a whole number") from None
    if not value.is_integer():
        raise ConfigError(f"{name}={raw!r} must be a whole number")
    return int(value)


def _parse_float(name: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise ConfigError(f"{name}={raw!r} must be a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r} must be a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} must be a finite number")
    return value


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return `config` with fields replaced. Keys are `field` or `section.field`."""
    known = all_fields()
    changes: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, raw in overrides.items():
        section, name = _locate_field(key, known)
        changes[section][name] = parse_value(name, known[name][1], raw)
    sections = {
        section: dataclasses.replace(getattr(config, section), **changes[section])
        for section in SECTIONS
        if changes[section]
    }
    return dataclasses.replace(config, **sections)


def apply_given_settings(config: RunConfig, overrides: dict[str, Any], origin: str) -> RunConfig:
    """`apply_overrides` for settings a person gave (a --config file, then flags) over a preset.

    A value given wins over what a lower layer would derive it from: `max_iters` given without
    `epochs` drops a lower layer's `epochs` (which would recompute max_iters from the data), and
    a lower layer's decay over its whole run (`lr_decay_iters` equal to its `max_iters`) follows
    the new length. Given together in one place, `epochs` and `max_iters` conflict; `origin`
    ("the flags", "config file run.toml") names that place in the error."""
    given = given_field_names(overrides)
    updated = apply_overrides(config, overrides)
    train = updated.train
    if {"epochs", "max_iters"} <= given and train.epochs:
        raise ConfigError(
            f"{origin} set both epochs={train.epochs:g} and max_iters={train.max_iters}, which "
            "both decide how long the run trains; keep one"
        )
    if "max_iters" not in given or "epochs" in given:
        return updated
    decays_over_whole_run = config.train.lr_decay_iters == config.train.max_iters
    follows = "lr_decay_iters" not in given and decays_over_whole_run
    train = dataclasses.replace(
        train, epochs=0.0, lr_decay_iters=0 if follows else train.lr_decay_iters
    )
    return dataclasses.replace(updated, train=train)


def check_given_settings(config: RunConfig, given: set[str]) -> None:
    """Refuse, in one line, step counts a person gave that contradict each other (values from
    presets and defaults are not checked: a short test run keeps the preset's warm-up)."""
    train = config.train
    if {"warmup_iters", "max_iters"} <= given and train.warmup_iters >= train.max_iters:
        raise ConfigError(
            f"warmup_iters={train.warmup_iters} is not below max_iters={train.max_iters}: the "
            "run would end before the learning rate reaches its peak; lower warmup_iters"
        )
    if {
        "warmup_iters",
        "lr_decay_iters",
    } <= given and 0 < train.lr_decay_iters <= train.warmup_iters:
        raise ConfigError(
            f"lr_decay_iters={train.lr_decay_iters} is not after warmup_iters="
            f"{train.warmup_iters}: the decay would end before the warm-up does; raise "
            "lr_decay_iters (or set 0: decay over max_iters)"
        )


def given_field_names(overrides: dict[str, Any]) -> set[str]:
    """The field names (`max_iters`) that override keys (`train.max_iters`, `max-iters`) set."""
    known = all_fields()
    return {_locate_field(key, known)[1] for key in overrides}


def _locate_field(key: str, known: dict[str, tuple[str, Any, Any]]) -> tuple[str, str]:
    section, _, name = key.rpartition(".")
    name = name.replace("-", "_")
    if name not in known or (section and known[name][0] != section):
        raise ConfigError(f"unknown config field {key!r}; `tinygpt train --help` lists every field")
    return known[name][0], name


def flatten_toml(document: dict[str, Any], origin: str) -> dict[str, Any]:
    """Turn `{train: {lr: 1}}` or `{"train.lr": 1}` into `{"train.lr": 1}`."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict):
            if key not in SECTIONS:
                raise ConfigError(f"{origin}: unknown section [{key}]; use {', '.join(SECTIONS)}")
            for name, inner in value.items():
                flat[f"{key}.{name}"] = inner
        else:
            flat[key] = value
    return flat


def load_toml_overrides(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory; give a TOML file") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None
    return flatten_toml(document, str(path))


def config_from_dict(document: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig saved by `RunConfig.to_json` (a run's config.json)."""
    overrides = flatten_toml({k: v for k, v in document.items() if k in SECTIONS}, "config.json")
    config = apply_overrides(RunConfig(), overrides)
    return dataclasses.replace(config, preset=str(document.get("preset", "")))
