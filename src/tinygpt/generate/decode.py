"""Autoregressive decoding of a batch of prompts with a KV cache, token by token.

Prompts of different lengths are left-padded to a common length; each sequence's positions count
from its own first token (see `tinygpt.model.kv_cache`), so a padded batch gives every sequence
the logits it would get alone.

Past the context. A model never saw more than block_size positions, with learned embeddings or
RoPE alike. When a sequence fills the context, the oldest quarter of it is dropped and the kept
three quarters are re-encoded into a fresh cache at positions 0.. (the sliding window of the
char-level tinygpt spec, docs/specs.md,
done a quarter at a time so the re-encoding costs about one token's work per generated token):
the model always sees between 3/4 and all of block_size tokens. Without the cache
(`use_cache=False`, the reference the cache is tested and benchmarked against) the window slides
by one token and everything is recomputed at every step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tinygpt.generate.fast_weights import with_fast_weights
from tinygpt.generate.sampling import TokenLogprob, token_logprobs
from tinygpt.model.gpt import GPT
from tinygpt.model.kv_cache import KVCache

PAD_ID = 0  # any id works: padded slots are masked out of attention and never predicted


def kept_when_sliding(block_size: int) -> int:
    """How many of the newest tokens stay in the context when it slides: three quarters."""
    return block_size - max(1, block_size // 4)


def first_context(ids: Sequence[int], block_size: int) -> list[int]:
    """What a decoder encodes first of a prompt: all of it, or its newest three quarters of a
    context when it is longer than the context (as `BatchDecoder` does when it starts)."""
    return list(ids if len(ids) <= block_size else ids[-kept_when_sliding(block_size) :])


@torch.inference_mode()
def prompt_logprobs(
    model: GPT, ids: Sequence[int], top: int = 0, vocab_size: int | None = None
) -> list[TokenLogprob]:
    """The log-probability of every token of `ids` but the first, given the tokens before it,
    with the `top` most likely tokens at its place (`echo` with `logprobs`: what evaluation
    harnesses score). Float32 weights, like `tinygpt eval`.

    Each token sees what `BatchDecoder` would show the model had it generated that token: all
    the tokens before it up to a full context, then, past the context, windows that slide by a
    quarter of it, so every later token is predicted from between 3/4 and all of block_size
    tokens (tested equal to the decoder fed the prompt token by token)."""
    model.eval()
    block_size = model.config.block_size
    device = next(model.parameters()).device
    tokens = torch.as_tensor(list(ids), device=device)
    scored: list[TokenLogprob] = []
    start, first = 0, 1  # the window's first token; the first token still to score
    while first < len(ids):
        last = min(len(ids) - 1, start + block_size)  # the last token this window predicts
        logits = model(tokens[start:last].view(1, -1))[0]  # (T, V): logits[i] predicts i + 1
        logits = without_padding_ids(logits[first - start - 1 :], vocab_size)
        scored += token_logprobs(logits, tokens[first : last + 1], top)
        first = last + 1
        start = first - kept_when_sliding(block_size)
    return scored


class BatchDecoder:
    """Holds the tokens of a batch of sequences and returns next-token logits for all of them.

    `precision`: the dtype of the weights read by decoding steps (see
    `tinygpt.generate.fast_weights`): float32 is exact, float16 reads half the bytes and is
    faster on a CPU."""

    def __init__(
        self,
        model: GPT,
        prompts: Sequence[Sequence[int]],
        use_cache: bool = True,
        precision: torch.dtype = torch.float32,
    ):
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        # the model as decoding steps run it: few-row products read `precision` weight copies
        self.model = with_fast_weights(model.eval(), precision)
        self.block_size = model.config.block_size
        self.device = next(model.parameters()).device
        self.use_cache = use_cache
        longest = max(len(p) for p in prompts)
        self.tokens = torch.full((len(prompts), longest), PAD_ID, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            self.tokens[row, longest - len(prompt) :] = torch.as_tensor(prompt)
        self.tokens = self.tokens.to(self.device)  # (B, L), left-padded
        self.first_slot = torch.tensor([longest - len(p) for p in prompts], device=self.device)
        self.cache: KVCache | None = None
        self._pending: Tensor | None = None  # tokens not yet fed to the cache

    @property
    def batch(self) -> int:
        return self.tokens.size(0)

    @torch.inference_mode()
    def next_logits(self) -> Tensor:
        """Logits (B, V) of the next token of every sequence."""
        if not self.use_cache:
            return self._recompute()
        if self.cache is None or self.cache.length + self._pending_count() > self.block_size:
            self._refill()
        assert self.cache is not None and self._pending is not None
        logits = self.model(self._pending, last_token_only=True, cache=self.cache)
        self._pending = self.tokens[:, :0]
        return logits[:, -1, :]

    def push(self, next_ids: Tensor) -> None:
        """Append one token (B,) to every sequence."""
        column = next_ids.view(-1, 1).to(self.device)
        self.tokens = torch.cat((self.tokens, column), dim=1)
        if self._pending is not None:
            self._pending = torch.cat((self._pending, column), dim=1)

    @torch.inference_mode()
    def join(self, sequence: Sequence[int]) -> bool:
        """Add a sequence to the batch without re-encoding the others. Its tokens but the last
        are encoded alone and their keys and values placed in the last slots of the shared
        cache (left padding); the last becomes its pending token, like every row's newest one.
        Returns False where that cannot be done (no cache, or one not stepped yet, or a
        sequence longer than what is cached): the caller builds a new decoder instead."""
        if self.cache is None or self._pending_count() != 1 or not sequence:
            return False
        length, head = self.cache.length, list(sequence[:-1])
        if len(head) > length:
            return False
        alone = self.model.new_cache(1, capacity=self.cache.capacity)
        if head:
            self.model(torch.tensor([head], device=self.device), True, alone)
        start = length - len(head)
        self.cache.add_row(alone, start)
        row = torch.full((1, length + 1), PAD_ID, dtype=torch.long, device=self.device)
        row[0, start:] = torch.as_tensor(sequence, device=self.device)
        self.tokens = torch.cat((self.tokens, row))
        self.first_slot = torch.cat((self.first_slot, self.first_slot.new_tensor([start])))
        self._pending = self.tokens[:, -1:]
        return True

    def reorder(self, indices: Tensor) -> None:
        """Keep sequences `indices` in that order (beam search)."""
        indices = indices.to(self.device)
        self.tokens = self.tokens.index_select(0, indices)
        self.first_slot = self.first_slot.index_select(0, indices)
        if self._pending is not None:
            self._pending = self._pending.index_select(0, indices)
        if self.cache is not None:
            self.cache.reorder(indices)

    def seen_tokens(self) -> Tensor:
        """The tokens (B, L) in the context, -1 where a row is padded: what a repetition
        penalty looks at."""
        columns = torch.arange(self.tokens.size(1), device=self.device)
        padding = columns.view(1, -1) < self.first_slot.view(-1, 1)
        return self.tokens.masked_fill(padding, -1)

    def _pending_count(self) -> int:
        return 0 if self._pending is None else self._pending.size(1)

    def _refill(self) -> None:
        """Start a cache from the last 3/4 of the context (or the whole prompt at first)."""
        if self.cache is None and self.tokens.size(1) <= self.block_size:
            keep = self.tokens.size(1)
        else:
            keep = min(self.tokens.size(1), kept_when_sliding(self.block_size))
        dropped = self.tokens.size(1) - keep
        self.tokens = self.tokens[:, dropped:]
        self.first_slot = (self.first_slot - dropped).clamp(min=0)
        self.cache = self.model.new_cache(self.batch, first_slot=self.first_slot)
        self._pending = self.tokens

    def _recompute(self) -> Tensor:
        context = self.tokens[:, -self.block_size :]
        if self.batch > 1 and bool(self.first_slot.any()):
            # padded batch without a cache: each sequence alone (this path is the reference)
            rows = [self._recompute_row(row) for row in range(self.batch)]
            return torch.cat(rows, dim=0)
        return self.model(context, last_token_only=True)[:, -1, :]

    def _recompute_row(self, row: int) -> Tensor:
        start = int(self.first_slot[row])
        context = self.tokens[row : row + 1, start:][:, -self.block_size :]
        return self.model(context, last_token_only=True)[:, -1, :]


def without_padding_ids(logits: Tensor, vocab_size: int | None) -> Tensor:
    """-inf for the ids past the tokenizer's vocabulary (a vocab padded to a multiple of 64),
    written into `logits` (fresh ones from a decoding step: a copy of 50k columns per step
    cost 7% of tinystories-small's batched step)."""
    if vocab_size is not None and vocab_size < logits.size(-1):
        logits[:, vocab_size:] = float("-inf")
    return logits


@torch.inference_mode()
def beam_search(
    model: GPT,
    prompt: Sequence[int],
    num_beams: int,
    max_new_tokens: int,
    end_ids: Sequence[int] = (),
    length_penalty: float = 1.0,
    min_new_tokens: int = 0,
    use_cache: bool = True,
    vocab_size: int | None = None,
    precision: torch.dtype = torch.float32,
) -> list[int]:
    """The most likely continuation found by beam search (Graves 2012; as in HF `generate`).

    Keeps the `num_beams` best partial continuations by total log-probability. A beam that
    draws an end id is finished, scored log p / length ** length_penalty (> 1 favours longer
    ones), and the search stops once `num_beams` are finished and no running beam can beat the
    worst of them, or at max_new_tokens. Returns the new ids, end id excluded.
    """
    decoder = BatchDecoder(model, [prompt], use_cache, precision)
    scores = torch.zeros(1, device=decoder.device)  # (beams,) total log-probability
    generated = torch.zeros(1, 0, dtype=torch.long)  # (beams, steps so far)
    finished: list[tuple[float, list[int]]] = []
    end = set(end_ids)
    for step in range(max_new_tokens):
        logits = without_padding_ids(decoder.next_logits().float(), vocab_size)
        log_probs = logits.log_softmax(dim=-1)  # (beams, V)
        if step < min_new_tokens and end:
            log_probs[:, list(end)] = float("-inf")
        candidates = (scores.view(-1, 1) + log_probs).view(-1)  # (beams * V,)
        top_scores, top = candidates.topk(min(2 * num_beams, candidates.numel()))
        vocab = log_probs.size(-1)
        keep_rows, keep_ids, keep_scores = [], [], []
        for score, index in zip(top_scores.tolist(), top.tolist(), strict=True):
            row, token = divmod(index, vocab)
            if token in end:
                finished.append((score / max(1, step) ** length_penalty, generated[row].tolist()))
            else:
                keep_rows.append(row)
                keep_ids.append(token)
                keep_scores.append(score)
            if len(keep_rows) == num_beams:
                break
        best_running = keep_scores[0] if keep_scores else float("-inf")
        if _search_is_over(finished, num_beams, best_running, step + 1, length_penalty):
            break
        rows, ids = torch.tensor(keep_rows), torch.tensor(keep_ids)
        decoder.reorder(rows)
        decoder.push(ids)
        generated = torch.cat((generated.index_select(0, rows), ids.view(-1, 1)), dim=1)
        scores = torch.tensor(keep_scores, device=decoder.device)
    else:
        for row in range(generated.size(0)):
            length = max(1, generated.size(1))
            finished.append((float(scores[row]) / length**length_penalty, generated[row].tolist()))
    return max(finished, key=lambda hypothesis: hypothesis[0])[1]


def _search_is_over(
    finished: list[tuple[float, list[int]]],
    num_beams: int,
    best_running: float,
    length: int,
    length_penalty: float,
) -> bool:
    if best_running == float("-inf"):
        return True
    if len(finished) < num_beams:
        return False
    worst_kept = sorted(score for score, _ in finished)[-num_beams]
    # log-probabilities only fall as a beam grows, so this bound holds for length_penalty <= 1;
    # for larger penalties it is HF's "early stopping" heuristic
    return best_running / length**length_penalty <= worst_kept
