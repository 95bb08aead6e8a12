"""Attention maps: how much each head of each layer looks at every earlier token of a prompt.

The model attends through fused SDPA, which never materialises the weights, and the model code
stays as it is: for one forward pass each attention module's `attend` (and the hybrid's
`attend_local`) is shadowed by an instance attribute that records its inputs, q (B, H, T, D)
and k, v (B, K, T, D) with RoPE already applied (the hybrid's local queries and keys), and then
calls the original. The weights are then recomputed from those inputs: causal
softmax(q k^T / sqrt(D)) (`tinygpt.eval.metrics.causal_attention_weights`), each key/value head
serving its group of H / K query heads as in SDPA; for the hybrid also the local branch's band
of additive weights (drawn as a T x T matrix) and the per-head gate, each in its own picture.

Drawing, for prompts of any length up to the context:
- Colour: most heads put most of their weight on the first token (an attention sink, Xiao et al.
  2023, https://arxiv.org/abs/2309.17453), which on a linear scale up to the largest weight
  leaves everything else dark. The scale therefore tops out at the largest weight outside the
  first column (the sink saturates, and each head's title gives its share), and is a square-root
  PowerNorm, so weights ten times smaller still show.
- Labels: the figure grows with the prompt up to a size limit, and only every k-th token is
  labelled, k chosen so labels a font height apart fit the axes; beyond MAX_LABELLED_TOKENS the
  axes show positions.
- Length: the model sees at most block_size tokens; a longer prompt is cut to its last
  block_size tokens, and a warning says how many were drawn.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from torch import Tensor

from tinygpt.directories import check_output_dir
from tinygpt.errors import ConfigError, DataError
from tinygpt.eval.metrics import causal_attention_weights
from tinygpt.model.attention import CausalSelfAttention
from tinygpt.model.gpt import GPT
from tinygpt.model.hybrid_attention import HybridAttention, band_to_dense, local_attention_weights
from tinygpt.tokenizers.base import Tokenizer

log = logging.getLogger(__name__)

MAX_LABELLED_TOKENS = 160  # beyond this, even every k-th token's text is noise: show positions
MAX_LABEL_CHARS = 10  # a longer token is cut with "…"
LABEL_FONT_SIZE = 6  # points
LABEL_PITCH = 1.3 * LABEL_FONT_SIZE / 72  # inches between the centres of two readable labels
LABEL_CHAR_INCHES = 0.75 * LABEL_FONT_SIZE / 72  # a wide character; most are narrower
# inches: each head's square of side `panel_inches`, with room around it for what is drawn there
TICK_ROOM = 0.2  # ticks and their padding, beside the labels
POSITION_ROOM = 0.55  # numbered positions and the axis label under or beside them
TITLE_ROOM, GAP, COLORBAR_ROOM, SUPTITLE_ROOM = 0.3, 0.25, 1.0, 0.5
PANEL_INCHES_PER_TOKEN = 0.07
MIN_PANEL_INCHES, MAX_PANEL_INCHES = 3.0, 7.0
MAX_FIGURE_INCHES = 24.0  # per side: several heads of a long prompt stay a viewable image
COLOUR_GAMMA = 0.5  # square root: a weight of 0.01 is a tenth of the way up, not a hundredth
MAP_FILES = ("layer*.png",)  # all `attention --out DIR` writes: DIR may hold only these


# B batch, T time, H query heads, K key/value heads, D head dim, A local_dim, W window
@dataclass(frozen=True)
class AttentionCall:
    """The inputs and the outputs of one layer's attention."""

    layer: int
    module: CausalSelfAttention
    q: Tensor  # (B, H, T, D)
    k: Tensor  # (B, K, T, D)
    v: Tensor  # (B, K, T, D)
    output: Tensor  # (B, H, T, D): the causal softmax attention's (the hybrid's global branch)
    local_queries: Tensor | None = None  # hybrid: (B, H, T, A)
    local_keys: Tensor | None = None  # hybrid: (B, K, T, A)
    local_output: Tensor | None = None  # hybrid: (B, H, T, D), the local branch's


@dataclass(frozen=True)
class LayerAttention:
    """The weights of one layer for one sequence."""

    layer: int
    weights: Tensor  # (H, T, T): the causal softmax weights (the hybrid's global branch)
    local_weights: Tensor | None = None  # hybrid: (H, T, T), the local band as a dense matrix
    gate: Tensor | None = None  # hybrid: (H,), the global branch's share of each head's output


@torch.no_grad()
def record_attention(model: GPT, idx: Tensor) -> list[AttentionCall]:
    """Run `model` on idx (B, T) once, in eval mode, and return every layer's attention call."""
    model.eval()
    modules = [block.attn for block in model.blocks]
    recorded: list[dict] = [{} for _ in modules]
    with _recording(modules, recorded):
        model(idx)
    return [AttentionCall(layer, module, **recorded[layer]) for layer, module in enumerate(modules)]


@contextmanager
def _recording(modules: list[CausalSelfAttention], recorded: list[dict]) -> Iterator[None]:
    """Shadow each module's `attend` (and `attend_local`) with a recorder; restore them after."""
    names = ("attend", "attend_local")
    shadowed = [{name: vars(module).get(name) for name in names} for module in modules]
    for module, fields in zip(modules, recorded, strict=True):
        module.attend = _recorder(module.attend, fields, ("q", "k", "v"), "output")
        if isinstance(module, HybridAttention):
            local = ("local_queries", "local_keys")
            module.attend_local = _recorder(module.attend_local, fields, local, "local_output")
    try:
        yield
    finally:
        for module, previous in zip(modules, shadowed, strict=True):
            for name in names:
                vars(module).pop(name, None)  # the class's method shows through again
                if previous[name] is not None:
                    setattr(module, name, previous[name])


def _recorder(
    method: Callable[..., Tensor], fields: dict, inputs: tuple[str, ...], output: str
) -> Callable[..., Tensor]:
    """`method`, writing its first len(inputs) arguments and its result into `fields`."""

    def record(*args: Tensor, **kwargs: object) -> Tensor:
        result = method(*args, **kwargs)
        fields.update(zip(inputs, args, strict=False), **{output: result})
        return result

    return record


def softmax_weights(q: Tensor, k: Tensor) -> Tensor:
    """Causal softmax(q k^T / sqrt(D)) in fp32: q (B, H, T, D), k (B, K, T, D) -> (B, H, T, T)."""
    return causal_attention_weights(q.float(), k.float())


def local_weights(call: AttentionCall) -> Tensor:
    """The hybrid's local additive weights as a (B, H, T, T) lower-triangular band."""
    module = call.module
    assert isinstance(module, HybridAttention)
    assert call.local_queries is not None and call.local_keys is not None
    band = local_attention_weights(
        call.local_queries, call.local_keys, module.score_vector, module.local_window
    )  # (B, H, T, W)
    return band_to_dense(band)  # (B, H, T, T)


def layer_attention(call: AttentionCall, sequence: int = 0) -> LayerAttention:
    """The weights of `call` for one sequence of its batch, on the CPU."""
    weights = softmax_weights(call.q, call.k)[sequence].cpu()
    if not isinstance(call.module, HybridAttention):
        return LayerAttention(call.layer, weights)
    with torch.no_grad():
        local = local_weights(call)[sequence].cpu()
        gate = call.module.gate().float().cpu()
    return LayerAttention(call.layer, weights, local, gate)


# ----------------------------------------------------------------------------------------------
# Pictures


def parse_layers(text: str, n_layer: int) -> list[int]:
    """`all`, or comma-separated layer indices such as `0,2` (negative ones count from the end)."""
    if text.strip() == "all":
        return list(range(n_layer))
    try:
        chosen = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--layers {text!r} must be `all` or indices such as 0,2") from None
    bad = [index for index in chosen if not -n_layer <= index < n_layer]
    if bad:
        raise ConfigError(f"--layers {text!r}: the model has layers 0..{n_layer - 1}, not {bad[0]}")
    return sorted({index % n_layer for index in chosen})


def token_labels(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """Each token's text, with whitespace made visible and `$` kept from starting mathtext."""
    labels = []
    for token in ids:
        text = tokenizer.decode([token])
        text = text.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "·")
        if len(text) > MAX_LABEL_CHARS:
            text = text[: MAX_LABEL_CHARS - 1] + "…"
        labels.append(text.replace("$", r"\$") or "∅")
    return labels


def context_ids(ids: list[int], block_size: int) -> list[int]:
    """The tokens the model sees: the last block_size, with a warning when that cuts some."""
    if len(ids) > block_size:
        log.warning(
            "the prompt has %d tokens, more than the model's context (block_size %d); drawing "
            "its last %d",
            len(ids), block_size, block_size,
        )  # fmt: skip
    return ids[-block_size:]


def write_attention_maps(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    out_dir: Path,
    layers: list[int] | None = None,
) -> list[Path]:
    """PNGs of every chosen layer's attention on `prompt` (its last block_size tokens, with a
    warning when that is not all of it):
    layerNN_attention.png for plain attention; for the hybrid layerNN_global.png,
    layerNN_local.png and layerNN_gate.png."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise DataError("the prompt is empty; give some text to look at")
    ids = context_ids(ids, model.config.block_size)
    device = next(model.parameters()).device
    calls = record_attention(model, torch.tensor([ids], dtype=torch.long, device=device))
    chosen = set(range(len(calls)) if layers is None else layers)
    labels = token_labels(tokenizer, ids)
    check_output_dir(out_dir, MAP_FILES)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for call in calls:
        if call.layer not in chosen:
            continue
        attention = layer_attention(call)
        name = f"layer{call.layer:02d}"
        if attention.gate is None:
            figure = head_grid(attention.weights, labels, f"layer {call.layer}: attention")
            written.append(_save(figure, out_dir / f"{name}_attention.png"))
            continue
        gate = attention.gate
        global_title = f"layer {call.layer}: global softmax branch (weight g)"
        written.append(
            _save(
                head_grid(attention.weights, labels, global_title, gate),
                out_dir / f"{name}_global.png",
            )
        )
        assert attention.local_weights is not None
        local_title = f"layer {call.layer}: local additive branch (weight 1 - g)"
        written.append(
            _save(
                head_grid(attention.local_weights, labels, local_title, 1 - gate),
                out_dir / f"{name}_local.png",
            )
        )
        written.append(_save(_gate_chart(gate, call.layer), out_dir / f"{name}_gate.png"))
    return written


def head_grid(
    weights: Tensor, labels: list[str] | None, title: str, head_share: Tensor | None = None
) -> Figure:
    """One panel per head: row t is where position t looks (queries down, keys across). One
    colour scale for all heads of the layer, set by `colour_norm`.

    The panels are placed by hand, in inches: each label's room is known from its length, so no
    layout engine has to measure every label once more before drawing it."""
    H, T, _ = weights.shape
    cols = math.ceil(math.sqrt(H))
    rows = math.ceil(H / cols)
    side = panel_inches(T, cols, rows)
    ticks = tick_labels(labels, side) if labels is not None else {}
    room = label_room(ticks)
    cell_width, cell_height = room + side + GAP, TITLE_ROOM + side + room
    width, height = cols * cell_width + COLORBAR_ROOM, rows * cell_height + SUPTITLE_ROOM
    figure = plt.figure(figsize=(width, height), dpi=110)
    norm = colour_norm(weights)
    first_token_share = weights[:, 1:, 0].mean(dim=1) if T > 1 else weights[:, 0, 0]  # (H,)
    for head in range(H):
        row, col = divmod(head, cols)
        left = col * cell_width + room
        bottom = height - SUPTITLE_ROOM - (row + 1) * cell_height + room
        ax = figure.add_axes((left / width, bottom / height, side / width, side / height))
        image = ax.imshow(weights[head].numpy(), cmap="viridis", norm=norm)
        share = "" if head_share is None else f" (share {float(head_share[head]):.2f})"
        sink = f", first token {float(first_token_share[head]):.0%}"
        ax.set_title(f"head {head}{share}{sink}", fontsize=8)
        _label_axes(ax, ticks)
    colorbar = figure.add_axes(((width - 0.75) / width, 0.15, 0.15 / width, 0.7))
    figure.colorbar(image, cax=colorbar, extend="max")
    figure.suptitle(title)
    return figure


def colour_norm(weights: Tensor) -> PowerNorm:
    """A square-root scale from 0 to the largest weight outside the first key column: the
    attention sink on the first token saturates instead of darkening every other weight."""
    rest = weights[..., 1:]  # (H, T, T - 1)
    top = float(rest.max()) if rest.numel() else float(weights.max())
    return PowerNorm(COLOUR_GAMMA, vmin=0.0, vmax=max(top, 1e-6))


def panel_inches(tokens: int, cols: int, rows: int) -> float:
    """A head's square: larger for longer prompts, within the figure's size limit."""
    side = min(max(PANEL_INCHES_PER_TOKEN * tokens, MIN_PANEL_INCHES), MAX_PANEL_INCHES)
    return min(side, MAX_FIGURE_INCHES / max(cols, rows))


def tick_labels(labels: list[str], side: float) -> dict[int, str]:
    """Position -> label for every k-th token, k the smallest that keeps labels LABEL_PITCH
    apart along a side of `side` inches; none beyond MAX_LABELLED_TOKENS."""
    if len(labels) > MAX_LABELLED_TOKENS:
        return {}
    stride = math.ceil(len(labels) / max(1, int(side / LABEL_PITCH)))
    return {position: labels[position] for position in range(0, len(labels), stride)}


def label_room(ticks: dict[int, str]) -> float:
    """Inches beside a panel for its longest label (the same left and below: x labels stand
    rotated), or for numbered positions."""
    if not ticks:
        return POSITION_ROOM
    return TICK_ROOM + LABEL_CHAR_INCHES * max(len(label) for label in ticks.values())


def _label_axes(ax: Axes, ticks: dict[int, str]) -> None:
    if not ticks:
        ax.set_xlabel("key position", fontsize=7)
        ax.set_ylabel("query position", fontsize=7)
        ax.tick_params(labelsize=LABEL_FONT_SIZE)
        return
    ax.set_xticks(list(ticks), list(ticks.values()), rotation=90, fontsize=LABEL_FONT_SIZE)
    ax.set_yticks(list(ticks), list(ticks.values()), fontsize=LABEL_FONT_SIZE)


def _gate_chart(gate: Tensor, layer: int) -> Figure:
    H = gate.numel()
    figure, ax = plt.subplots(figsize=(max(3.5, 0.6 * H + 1.5), 3.4), dpi=110)
    ax.bar(range(H), gate.numpy(), color="tab:blue", label="global (g)")
    ax.bar(range(H), (1 - gate).numpy(), bottom=gate.numpy(), color="tab:orange", label="local")
    ax.set(xlabel="head", ylabel="share of the head's output", ylim=(0, 1), xticks=range(H))
    ax.set_title(f"layer {layer}: gate per head")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    figure.tight_layout()
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path)
    plt.close(figure)
    return path
