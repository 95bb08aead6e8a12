import copy

import pytest
import torch
from safetensors.torch import load_file

from tinygpt.errors import ConfigError
from tinygpt.finetune.lora import (
    ADAPTER_WEIGHTS,
    LoraSettings,
    add_lora,
    apply_adapter,
    count_parameters,
    describe_parameters,
    merged_model,
    merged_model_config,
    parse_targets,
    resolve_targets,
    save_adapter,
)
from tinygpt.model.gpt import GPT


def wrapped(tiny_config, targets: str = "qkv,proj", r: int = 4) -> tuple[GPT, list[str]]:
    torch.manual_seed(0)
    model = GPT(tiny_config)
    adapted = add_lora(model, LoraSettings(r=r, alpha=8.0, targets=parse_targets(targets)))
    return model, adapted


def randomise_adapters(model: GPT) -> None:
    """B starts at zero, which would make every merge test pass trivially."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lora_" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def test_suffixes_resolve_to_full_module_names(tiny_config):
    model = GPT(tiny_config)
    assert resolve_targets(model, ("qkv",)) == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    assert resolve_targets(model, ("attn.proj", "lm_head")) == [
        "blocks.0.attn.proj",
        "blocks.1.attn.proj",
        "lm_head",
    ]
    assert len(resolve_targets(model, ("proj",))) == 4  # attn.proj and mlp.proj of both blocks


def test_targets_that_match_nothing_list_the_linear_modules(tiny_config):
    with pytest.raises(ConfigError) as caught:
        resolve_targets(GPT(tiny_config), ("qkv", "q_proj", "attn"))
    message = str(caught.value)
    assert "\n" not in message
    assert "q_proj,attn match no Linear module" in message
    for name in ("blocks.N.attn.qkv", "blocks.N.attn.proj", "blocks.N.mlp.fc", "lm_head"):
        assert name in message
    assert "(N = 0-1)" in message


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"r": 0}, "--lora-r 0 must be greater than 0"),
        ({"r": -2}, "--lora-r -2"),
        ({"alpha": 0.0}, "--lora-alpha"),
        ({"dropout": 1.0}, "--lora-dropout"),
        ({"targets": parse_targets("qkv,")}, "--lora-targets"),
    ],
)
def test_bad_settings_are_config_errors(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        LoraSettings(**settings)


def test_only_adapter_parameters_require_grad(tiny_config):
    model, adapted = wrapped(tiny_config, "qkv,attn.proj")
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * len(adapted) == 2 * 4
    count, total = count_parameters(model)
    # qkv 32 -> 96 and attn.proj 32 -> 32, rank 4, two blocks: 4 * (32 + 96) + 4 * (32 + 32)
    assert count == 2 * (4 * (32 + 96) + 4 * (32 + 32))
    assert describe_parameters(model) == (
        f"trainable {count:,} of {total:,} parameters ({100 * count / total:.2f}%)"
    )


def test_a_fresh_adapter_changes_nothing(tiny_config):
    base = GPT(tiny_config).eval()
    torch.manual_seed(0)
    model = GPT(tiny_config)
    model.load_state_dict(base.state_dict())
    add_lora(model, LoraSettings(r=4, targets=("qkv", "fc")))
    idx = torch.randint(tiny_config.vocab_size, (2, 16))
    assert torch.equal(model.eval()(idx), base(idx))  # B = 0: exactly the base model


@pytest.mark.parametrize("targets", ["qkv,proj", "qkv,proj,fc,lm_head"])
def test_merged_model_equals_base_plus_adapter(tiny_config, targets):
    model, adapted = wrapped(tiny_config, targets)
    randomise_adapters(model)
    model.eval()
    merged_config = merged_model_config(tiny_config, adapted)
    merged = merged_model(model, merged_config)
    idx = torch.randint(tiny_config.vocab_size, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = model(idx), merged(idx)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # a LoRA on the tied output head unties it: the token embedding keeps the base matrix
    assert merged_config.tie_weights == ("lm_head" not in adapted)
    assert torch.equal(merged.wte.weight, model.wte.weight)


def test_merging_leaves_the_wrapped_base_weights_alone(tiny_config):
    model, adapted = wrapped(tiny_config, "qkv,lm_head")
    randomise_adapters(model)
    before = {n: t.clone() for n, t in model.state_dict().items() if ".lora_" not in n}
    merged_model(model, merged_model_config(tiny_config, adapted))
    after = model.state_dict()
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())


def test_adapter_files_hold_only_lora_tensors_and_load_back(tiny_config, tmp_path):
    torch.manual_seed(0)
    base = GPT(tiny_config).eval()
    model = copy.deepcopy(base)
    settings = LoraSettings(r=4, alpha=8.0, targets=("qkv", "fc"))
    adapted = add_lora(model, settings)
    randomise_adapters(model)
    directory = save_adapter(tmp_path, model, settings, adapted, {"base_run": "somewhere"})
    tensors = load_file(directory / ADAPTER_WEIGHTS)
    assert len(tensors) == 2 * len(adapted)
    assert all(name.endswith((".lora_A.weight", ".lora_B.weight")) for name in tensors)

    torch.manual_seed(5)  # other A matrices at injection: the loaded ones must replace them
    apply_adapter(base, directory)
    idx = torch.randint(tiny_config.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(base.eval()(idx), model.eval()(idx), atol=0, rtol=0)
