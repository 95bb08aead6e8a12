import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tinygpt.cli import main
from tinygpt.config import DataConfig, ModelConfig, RunConfig
from tinygpt.data.prepare import prepare_dataset
from tinygpt.eval import dialog_replies
from tinygpt.eval.dialog_replies import Reply
from tinygpt.eval.evaluate import eval_batches, evaluate_run, split_loss
from tinygpt.model.gpt import GPT
from tinygpt.tokenizers.base import load_tokenizer

TINY = ["--block_size", "16", "--n_layer", "2", "--n_head", "2", "--n_embd", "32"]
QUICK = ["--batch_size", "4", "--eval_iters", "2", "--log_interval", "5", "--workers", "1"]
TEXT = "Naïve café owners, über-fast: €5 a cup.\n" * 40  # multi-byte characters: bytes != chars


@pytest.mark.parametrize("n_tokens", [20, 21, 23, 3, 2, 1])
def test_full_pass_covers_every_token_exactly_once(n_tokens: int):
    tokens = np.arange(n_tokens, dtype=np.uint16)
    batches = list(eval_batches(tokens, block_size=4, batch_size=3))
    windows = [torch.cat((x[:, :1], y), dim=1) for x, y, _ in batches]
    seen = torch.cat([w.flatten() for w in windows]).tolist() if windows else []
    targets = torch.cat([y.flatten() for _, y, _ in batches]).tolist() if batches else []
    window = 5
    # every token is in exactly one window, in order; a lone last token has nothing to predict
    covered = n_tokens if n_tokens % window != 1 else n_tokens - 1
    assert seen == list(range(covered))
    assert len(targets) == len(set(targets)) == n_tokens - math.ceil(n_tokens / window)
    assert not set(targets) & set(range(0, n_tokens, window))  # window starts are never targets
    assert all(torch.equal(x[:, 1:], y[:, :-1]) for x, y, _ in batches)


def test_loss_mask_selects_bot_targets():
    tokens = np.arange(12, dtype=np.uint16)
    mask = np.array([0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0], dtype=np.uint8)
    batches = eval_batches(tokens, 3, batch_size=2, loss_mask=mask)
    learned = torch.cat([y[learn] for _, y, learn in batches]).tolist()
    assert learned == [2, 3, 7, 9]  # 8 starts the third window: never a target


@pytest.fixture(scope="module")
def prepared_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("eval-data")
    (folder / "text.txt").write_text(TEXT, encoding="utf-8")
    data = DataConfig(source=str(folder / "text.txt"), tokenizer="char", workers=1)
    return prepare_dataset(data, out_dir=folder / "prepared").directory


def hand_mean_loss(model: GPT, tokens: np.ndarray, window: int) -> float:
    """Per-token log-probabilities from the logits, one window at a time."""
    total, count = 0.0, 0
    for start in range(0, len(tokens), window):
        ids = torch.from_numpy(tokens[start : start + window].astype(np.int64))
        if len(ids) < 2:
            continue
        with torch.no_grad():
            log_probs = torch.log_softmax(model(ids[None, :-1]).double(), dim=-1)[0]
        total -= log_probs.gather(1, ids[1:, None]).sum().item()
        count += len(ids) - 1
    return total / count


def test_perplexity_and_bits_per_byte_match_a_hand_computation(prepared_text: Path):
    torch.manual_seed(0)
    tokenizer = load_tokenizer(prepared_text / "tokenizer.json")
    model_config = ModelConfig(
        vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0
    )
    model = GPT(model_config).eval()
    config = RunConfig(model=model_config, data=DataConfig(source=str(prepared_text)))
    report = evaluate_run(model, tokenizer, config, Path("run"), batch_size=3)

    tokens = np.fromfile(prepared_text / "val.bin", dtype=np.uint16)
    meta = json.loads((prepared_text / "meta.json").read_text())
    expected = hand_mean_loss(model, tokens, window=9)
    assert report.split_tokens == len(tokens) == meta["val_tokens"]
    assert report.predicted_tokens == len(tokens) - math.ceil(len(tokens) / 9)
    assert report.loss == pytest.approx(expected, rel=1e-5)
    assert report.perplexity == pytest.approx(math.exp(expected), rel=1e-5)
    assert meta["val_bytes"] > meta["val_chars"]
    bits_per_byte = expected / math.log(2) * len(tokens) / meta["val_bytes"]
    assert report.bits_per_byte == pytest.approx(bits_per_byte, rel=1e-5)
    assert report.bits_per_char == pytest.approx(
        expected / math.log(2) * len(tokens) / meta["val_chars"], rel=1e-5
    )
    # the batch size changes the speed, never the figure
    one_by_one = split_loss(model, tokens, batch_size=1)
    assert one_by_one.loss == pytest.approx(report.loss, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# End to end, through the CLI


def train(run_dir: Path, data: Path, *flags: str) -> Path:
    argv = ["train", "--data", str(data), "--out", str(run_dir), *TINY, *QUICK, *flags]
    assert main([*argv, "--max_iters", "4", "--eval_interval", "4"]) == 0
    return run_dir


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("text-run")
    (folder / "text.txt").write_text(TEXT, encoding="utf-8")
    return train(folder / "run", folder / "text.txt")


def test_eval_writes_json_and_markdown(capsys, text_run: Path, tmp_path: Path):
    capsys.readouterr()
    assert main(["eval", str(text_run), "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    document = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert document["perplexity"] == pytest.approx(math.exp(document["loss"]))
    assert document["bits_per_byte"] is not None and document["bleu"] is None
    assert "| perplexity |" in out
    assert (tmp_path / "eval" / "eval.md").read_text() in out


def test_eval_on_another_source_with_the_same_vocabulary(capsys, text_run, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(TEXT[::-1], encoding="utf-8")  # other text, the same characters
    assert main(["eval", str(text_run), "--data", str(other), "--out", str(tmp_path / "e")]) == 0
    document = json.loads((tmp_path / "e" / "eval.json").read_text())
    meta = json.loads((Path(document["data"]) / "meta.json").read_text())
    assert meta["origin"] == str(other) and math.isfinite(document["loss"])


@pytest.mark.parametrize(
    ("is_prepared", "fragment"),
    [(False, "-character vocabulary it is tokenized with"), (True, "tokenized differently")],
)
def test_eval_refuses_data_of_another_tokenizer(capsys, text_run, tmp_path, is_prepared, fragment):
    other = tmp_path / "other.txt"
    other.write_text("xyz 123 qrs\n" * 50, encoding="utf-8")
    data = other
    if is_prepared:
        data = tmp_path / "prepared"
        assert main(["prepare", str(other), "--out", str(data), "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["eval", str(text_run), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tinygpt: error:") and fragment in err
    assert len(err.splitlines()) == 1


def test_bleu_on_a_tiny_dialog_run(capsys, dialog_fixtures: Path, tmp_path: Path, monkeypatch):
    source = dialog_fixtures / "dailydialog" / "train"
    run_dir = train(
        tmp_path / "run",
        source,
        "--format",
        "dialog",
        "--loss_on",
        "bot",
        "--max_documents",
        "60",
    )
    capsys.readouterr()
    out_dir = tmp_path / "eval"
    assert main(["eval", str(run_dir), "--max-dialogs", "3", "--out", str(out_dir)]) == 0
    document = json.loads((out_dir / "eval.json").read_text())
    assert document["dialogs"] == 3 and document["replies"] >= 3
    for key in ("bleu", "distinct_1", "distinct_2", "bot_loss", "loss"):
        assert isinstance(document[key], float), key
    assert 0 < document["bot_tokens"] < document["predicted_tokens"]
    assert document["examples"] and {"user", "reference", "generated"} <= set(
        document["examples"][0]
    )
    assert "BLEU" in capsys.readouterr().out

    # wiring: replies equal to their references score 100
    def echo(model, tokenizer, conversations, max_dialogs, max_new_tokens):
        first = itertools.islice(conversations, max_dialogs)
        turns = [turn for conversation in first for turn in conversation.turns]
        return [Reply(user, bot, bot) for user, bot in turns], max_dialogs

    monkeypatch.setattr(dialog_replies, "generate_replies", echo)
    assert main(["eval", str(run_dir), "--max-dialogs", "3", "--out", str(out_dir)]) == 0
    document = json.loads((out_dir / "eval.json").read_text())
    assert document["bleu"] == pytest.approx(100.0)
