"""The adapter in peft's layout: `PeftModel.from_pretrained` on the exported base run gives the
merged model's logits; tinygpt reads it back exactly; a model with no transformers class takes
the names of its export with its own code."""

import copy
import json
import logging
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from tinygpt.config import DataConfig, ModelConfig, RunConfig
from tinygpt.errors import CheckpointError
from tinygpt.export.hf import export_hf
from tinygpt.finetune.adapter import (
    ADAPTER_WEIGHTS,
    PEFT_CONFIG,
    RECORD,
    apply_adapter,
    log_module_names,
    module_names_for,
    save_adapter,
)
from tinygpt.finetune.lora import (
    LoraSettings,
    adapter_state_dict,
    add_lora,
    merged_model,
    merged_model_config,
)
from tinygpt.model.gpt import GPT
from tinygpt.run.checkpoint import save_checkpoint
from tinygpt.run.directory import create_run_dir, sha256_of
from tinygpt.tokenizers.char import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LLAMA = {"norm": "rmsnorm", "position": "rope", "ffn": "swiglu", "bias": False}
HYBRID = {"attention": "hybrid", "n_kv_head": 2, "local_window": 4, "local_dim": 8}
EVERY_LINEAR = LoraSettings(r=4, alpha=8.0, targets=("qkv", "proj", "fc", "lm_head"), dropout=0.1)
TOKENIZER = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz .,\n")


def base_model(**fields: object) -> GPT:
    """A tiny GPT with every weight moved off its init (a swapped tensor shows)."""
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=TOKENIZER.vocab_size + 3, block_size=16, n_layer=2, n_head=4, n_embd=32,
        dropout=0.0, **fields,
    )  # fmt: skip
    model = GPT(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def finetuned(base: GPT, randomise_adapters, settings: LoraSettings = EVERY_LINEAR):
    """(a copy of `base` wrapped with random adapters, the adapted module names)"""
    model = copy.deepcopy(base)
    adapted = add_lora(model, settings)
    randomise_adapters(model)
    return model.eval(), adapted


def export_base(base: GPT, tmp_path: Path) -> Path:
    """The base model as a run, exported as `tinygpt export` does."""
    run_dir = tmp_path / "base"
    config = RunConfig(model=base.config, data=DataConfig(source="unused"))
    create_run_dir(run_dir, config.to_json(), json.dumps(TOKENIZER.to_dict()), {})
    save_checkpoint(run_dir, 1, base, {}, {}, is_best=True)
    return export_hf(run_dir, tmp_path / "base-hf").directory


def save(model: GPT, adapted: list[str], tmp_path: Path, settings=EVERY_LINEAR) -> Path:
    names = module_names_for(model.config)
    return save_adapter(tmp_path / "tuned", model, settings, adapted, names, {"base_run": "b"})


def token_ids(count: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    return torch.randint(TOKENIZER.vocab_size, (count, 16), generator=generator)


@pytest.mark.parametrize(
    "fields",
    [{}, {"tie_weights": False, "bias": False}, {**LLAMA, "n_kv_head": 2}],
    ids=["gpt2", "gpt2-untied-no-bias", "llama-gqa"],
)
@pytest.mark.filterwarnings("ignore::UserWarning:peft")  # advice on merging a tied lm_head
def test_peft_loads_the_adapter_onto_the_exported_base(fields, tmp_path, randomise_adapters):
    base = base_model(**fields)
    model, adapted = finetuned(base, randomise_adapters)
    directory = save(model, adapted, tmp_path)
    hf_model = AutoModelForCausalLM.from_pretrained(export_base(base, tmp_path)).eval()
    ids = token_ids()
    with torch.no_grad():
        base_logits = hf_model(ids).logits
        tuned = PeftModel.from_pretrained(hf_model, directory).eval()
        expected = merged_model(model, merged_model_config(base.config, adapted))(ids)
        assert (tuned(ids).logits - expected).abs().max() < 1e-4
        assert (base_logits - expected).abs().max() > 1e-2  # the adapter does change them


def test_llama_q_k_v_share_the_fused_a_and_split_b_by_rows(tmp_path, randomise_adapters):
    base = base_model(**LLAMA, n_kv_head=2)  # q 32 rows, k and v 16 each
    settings = LoraSettings(r=4, targets=("qkv",))
    model, adapted = finetuned(base, randomise_adapters, settings)
    directory = save(model, adapted, tmp_path, settings)
    tensors = load_file(directory / ADAPTER_WEIGHTS)
    ours = adapter_state_dict(model)
    prefix = "base_model.model.model.layers.1.self_attn"
    for part in ("q", "k", "v"):
        A = tensors[f"{prefix}.{part}_proj.lora_A.weight"]
        assert torch.equal(A, ours["blocks.1.attn.qkv.lora_A.weight"])
    B = [tensors[f"{prefix}.{part}_proj.lora_B.weight"] for part in ("q", "k", "v")]
    assert [b.shape[0] for b in B] == [32, 16, 16]
    assert torch.equal(torch.cat(B), ours["blocks.1.attn.qkv.lora_B.weight"])
    config = json.loads((directory / PEFT_CONFIG).read_text())
    assert config["target_modules"][:3] == [f"model.layers.0.self_attn.{p}_proj" for p in "qkv"]
    assert (config["peft_type"], config["task_type"], config["r"]) == ("LORA", "CAUSAL_LM", 4)


@pytest.mark.parametrize("fields", [{}, {**LLAMA, "n_kv_head": 2}, HYBRID])
def test_tinygpt_reads_its_adapter_back_exactly(fields, tmp_path, randomise_adapters):
    base = base_model(**fields)
    model, adapted = finetuned(base, randomise_adapters)
    directory = save(model, adapted, tmp_path)
    torch.manual_seed(5)  # other A matrices at injection: the loaded ones must replace them
    apply_adapter(base, directory)
    with torch.no_grad():
        torch.testing.assert_close(base.eval()(token_ids()), model(token_ids()), atol=0, rtol=0)


def test_a_model_with_no_transformers_class_takes_its_custom_exports_names(
    tmp_path, randomise_adapters, caplog
):
    """A hybrid is exported with its own code (TinyGPTForCausalLM.model is the GPT): peft puts
    the adapter on that export, loaded with trust_remote_code, and gives the merged logits."""
    base = base_model(**HYBRID)
    model, adapted = finetuned(base, randomise_adapters)
    directory = save(model, adapted, tmp_path)
    with caplog.at_level(logging.INFO, logger="tinygpt"):
        log_module_names(module_names_for(base.config))  # what the Finetuner says at its start
    (line,) = [r.getMessage() for r in caplog.records if "module names" in r.getMessage()]
    assert "`tinygpt export`'s own code" in line and "attention=hybrid" in line
    tensors = load_file(directory / ADAPTER_WEIGHTS)
    assert "base_model.model.model.blocks.0.attn.qkv.lora_A.weight" in tensors
    record = json.loads((directory / RECORD).read_text())
    assert record["module_names"] == "tinygpt-remote-code"
    exported = AutoModelForCausalLM.from_pretrained(
        export_base(base, tmp_path), trust_remote_code=True
    )
    with torch.no_grad():
        tuned = PeftModel.from_pretrained(exported, directory).eval()
        logits = tuned(input_ids=token_ids()).logits
        torch.testing.assert_close(logits, model(token_ids()), atol=1e-5, rtol=0)
    torch.manual_seed(5)
    apply_adapter(base, directory)  # and tinygpt reads it back exactly
    with torch.no_grad():
        torch.testing.assert_close(base.eval()(token_ids()), model(token_ids()), atol=0, rtol=0)


def test_an_adapter_file_replaced_after_saving_is_refused(tmp_path, randomise_adapters):
    base = base_model()
    model, adapted = finetuned(base, randomise_adapters)
    directory = save(model, adapted, tmp_path)
    config = json.loads((directory / PEFT_CONFIG).read_text())
    (directory / PEFT_CONFIG).write_text(json.dumps({**config, "r": 8}))
    with pytest.raises(CheckpointError, match=r"does not match the sha256 in adapter\.json"):
        apply_adapter(base, directory)


def test_an_adapter_of_the_first_layout_still_loads(tmp_path, randomise_adapters):
    """Version 1: tinygpt's names without peft's prefix, and no adapter_config.json."""
    base = base_model()
    model, adapted = finetuned(base, randomise_adapters)
    directory = tmp_path / "adapter"
    directory.mkdir()
    save_file(adapter_state_dict(model), directory / ADAPTER_WEIGHTS)
    record = {
        "format": "tinygpt-lora-adapter", "version": 1, "r": 4, "lora_alpha": 8.0,
        "lora_dropout": 0.1, "target_modules": adapted,
        "weights": {"file": ADAPTER_WEIGHTS, "sha256": sha256_of(
            (directory / ADAPTER_WEIGHTS).read_bytes()
        )},
    }  # fmt: skip
    (directory / RECORD).write_text(json.dumps(record))
    apply_adapter(base, directory)
    with torch.no_grad():
        torch.testing.assert_close(base.eval()(token_ids()), model(token_ids()), atol=0, rtol=0)
