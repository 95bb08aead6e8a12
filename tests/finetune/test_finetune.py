import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cli_helpers import saved_step_names
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tinygpt.data.prepare import prepare_dataset
from tinygpt.errors import ConfigError, DataError
from tinygpt.export.hf import export_hf
from tinygpt.finetune.adapter import ADAPTER_DIR, ADAPTER_WEIGHTS, RECORD, apply_adapter
from tinygpt.finetune.loop import Finetuner, start_finetune
from tinygpt.finetune.lora import LoraSettings
from tinygpt.run.load import load_model_from_run
from tinygpt.run.metrics import read_metrics
from tinygpt.train.loop import TrainResult
from tinygpt.train.schedule import learning_rate_at

SETTINGS = LoraSettings(r=4, alpha=8.0, targets=("qkv", "proj", "lm_head"), dropout=0.0)


@dataclass
class Finetuned:
    finetuner: Finetuner
    result: TrainResult
    base_state: dict[str, torch.Tensor]  # the base run's weights, loaded before fine-tuning
    base_file_sha256: str


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finetuned(base_run, new_text, tmp_path_factory, finetune_fields) -> Finetuned:
    base_file = base_run / "checkpoints" / "best" / "model.safetensors"
    base_sha = file_sha256(base_file)
    base_model, _, _ = load_model_from_run(base_run)
    base_state = {name: t.clone() for name, t in base_model.state_dict().items()}
    run_dir = tmp_path_factory.mktemp("finetuned") / "run"
    finetuner = start_finetune(base_run, run_dir, str(new_text), SETTINGS, finetune_fields)
    return Finetuned(finetuner, finetuner.fit(), base_state, base_sha)


def test_only_adapter_parameters_require_grad(finetuned):
    model = finetuned.finetuner.model
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    optimized = {
        id(p) for group in finetuned.finetuner.optimizer.param_groups for p in group["params"]
    }
    assert optimized == {id(p) for p in model.parameters() if p.requires_grad}
    assert finetuned.finetuner.parameter_summary().startswith("trainable ")
    # MFU counts no weight gradients for the frozen matmuls: 4 FLOPs per weight instead of 6
    finetuner = finetuned.finetuner
    full = finetuner.model.flops_per_token(finetuner.config.model.block_size)
    assert 4 / 6 * full < finetuner.flops_per_token < 0.8 * full


def test_base_weights_are_bitwise_unchanged(finetuned, base_run):
    assert file_sha256(base_run / "checkpoints" / "best" / "model.safetensors") == (
        finetuned.base_file_sha256
    )
    frozen = {
        name.replace(".base_layer.", "."): tensor.cpu()
        for name, tensor in finetuned.finetuner.model.state_dict().items()
        if ".lora_" not in name
    }
    assert frozen.keys() == finetuned.base_state.keys()
    for name, tensor in finetuned.base_state.items():
        assert torch.equal(frozen[name], tensor), name


def test_finetuning_lowers_the_loss_on_the_new_data(finetuned):
    evals = [r for r in read_metrics(finetuned.result.run_dir) if r["kind"] == "eval"]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 30
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.3, evals
    assert finetuned.result.stop_reason == "completed"


def test_merged_run_equals_base_plus_adapter(finetuned, base_run):
    run_dir = finetuned.result.run_dir
    last, _, config = load_model_from_run(run_dir, "last")
    vocab = config.model.vocab_size
    idx = torch.randint(vocab, (4, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # the adapter in memory is the last step's; checkpoints/last holds it merged
        wrapped = finetuned.finetuner.model.eval()
        torch.testing.assert_close(last(idx), wrapped(idx), atol=1e-5, rtol=0)
        assert config.model.tie_weights is False  # lm_head adapted: untied when merged

        # adapter/ is the best step's: on top of the base run it gives checkpoints/best
        best, _, _ = load_model_from_run(run_dir, "best")
        base, _, _ = load_model_from_run(base_run)
        base_logits = base(idx)
        apply_adapter(base, run_dir / ADAPTER_DIR)
        torch.testing.assert_close(best(idx), base.eval()(idx), atol=1e-5, rtol=0)
        assert not torch.allclose(best(idx), base_logits, atol=1e-2)  # the adapter did learn


def test_adapter_directory_holds_only_lora_tensors_and_names_the_base(finetuned, base_run):
    directory = finetuned.result.run_dir / ADAPTER_DIR
    tensors = load_file(directory / ADAPTER_WEIGHTS)
    info = json.loads((directory / RECORD).read_text())
    assert len(tensors) == 2 * len(info["target_modules"]) == 2 * (2 + 4 + 1)
    assert all(".lora_A." in name or ".lora_B." in name for name in tensors)
    assert sum(t.numel() for t in tensors.values()) < 0.2 * sum(
        t.numel() for t in finetuned.base_state.values()
    )
    meta = json.loads((base_run / "checkpoints" / "best" / "meta.json").read_text())
    assert info["base_model_sha256"] == meta["files"]["model.safetensors"]["sha256"]
    assert info["base_run"] == str(base_run.resolve())
    assert (info["r"], info["lora_alpha"], info["module_names"]) == (4, 8.0, "gpt2")


@pytest.mark.filterwarnings("ignore::UserWarning:peft")  # advice on merging a tied lm_head
def test_peft_puts_the_adapter_on_the_exported_base_run(finetuned, base_run, tmp_path):
    """The adapter as peft saves one: on the base run's `tinygpt export`, it gives the merged
    fine-tuned run's logits."""
    hf_model = AutoModelForCausalLM.from_pretrained(export_hf(base_run, tmp_path / "hf").directory)
    adapter_dir = finetuned.result.run_dir / ADAPTER_DIR
    tuned = PeftModel.from_pretrained(hf_model.eval(), adapter_dir).eval()
    merged, _, config = load_model_from_run(finetuned.result.run_dir, "best")
    idx = torch.randint(
        config.model.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        assert (tuned(idx).logits - merged(idx)).abs().max() < 1e-4


def test_a_short_finetune_fits_the_base_runs_warmup(base_run, new_text, tmp_path, finetune_fields):
    """The base run warms up over 100 steps: kept, a 50-step fine-tune would never reach its
    peak learning rate."""
    fields = {name: value for name, value in finetune_fields.items() if name != "warmup_iters"}
    fields["max_iters"] = "50"
    base_warmup = json.loads((base_run / "config.json").read_text())["train"]["warmup_iters"]
    assert base_warmup == 100
    finetuner = start_finetune(base_run, tmp_path / "fitted", str(new_text), SETTINGS, fields)
    train = finetuner.config.train
    assert train.warmup_iters == 5  # a tenth of max_iters
    assert learning_rate_at(train.warmup_iters, train) == pytest.approx(train.learning_rate)
    given = {**fields, "warmup_iters": "20"}
    finetuner = start_finetune(base_run, tmp_path / "given", str(new_text), SETTINGS, given)
    assert finetuner.config.train.warmup_iters == 20


def test_given_step_counts_that_conflict_are_refused_as_train_refuses_them(
    base_run, new_text, tmp_path, finetune_fields
):
    fields = {**finetune_fields, "max_iters": "50", "warmup_iters": "100"}
    with pytest.raises(ConfigError, match="warmup_iters=100 is not below max_iters=50"):
        start_finetune(base_run, tmp_path / "conflict", str(new_text), SETTINGS, fields)
    assert not (tmp_path / "conflict").exists()


def test_a_finetune_keeps_the_checkpoints_it_is_told_to(
    base_run, new_text, tmp_path, finetune_fields
):
    fields = {**finetune_fields, "keep_checkpoints": "2"}
    finetuner = start_finetune(base_run, tmp_path / "kept", str(new_text), SETTINGS, fields)
    names = saved_step_names(finetuner, 4)
    assert names == ["step-0000000", "step-0000003", "step-0000004"]


def test_the_new_run_holds_its_data_tokenized_with_the_base_tokenizer(finetuned, base_run):
    run_dir = finetuned.result.run_dir
    assert (run_dir / "tokenizer.json").read_text() == (base_run / "tokenizer.json").read_text()
    assert (run_dir / "data" / "tokenizer.json").read_text() == (
        (base_run / "tokenizer.json").read_text()
    )
    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["finetune"]["base_run"] == str(base_run.resolve())
    assert not list(run_dir.parent.glob(".*"))  # no staging leftovers beside the run


def test_characters_outside_the_base_vocabulary_are_refused(base_run, tmp_path, finetune_fields):
    text = tmp_path / "greek.txt"
    text.write_text("λόγος " * 200, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        start_finetune(base_run, tmp_path / "out", str(text), SETTINGS, finetune_fields)
    assert "has characters outside the vocabulary of " in str(caught.value)
    assert "'λ'" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_data_prepared_with_another_tokenizer_is_refused(
    base_run, new_text, tmp_path, finetune_fields
):
    from tinygpt.config import DataConfig

    prepared = prepare_dataset(DataConfig(source=str(new_text), workers=1), out_dir=tmp_path / "p")
    with pytest.raises(DataError, match="tokenized with another char vocabulary"):
        start_finetune(
            base_run, tmp_path / "out", str(prepared.directory), SETTINGS, finetune_fields
        )
