import pytest
import torch

from tinygpt.errors import ConfigError
from tinygpt.finetune.lora import (
    LoraSettings,
    add_lora,
    count_parameters,
    describe_adapted,
    describe_parameters,
    group_module_names,
    merged_model,
    merged_model_config,
    parse_targets,
    resolve_targets,
)
from tinygpt.model.gpt import GPT


def wrapped(tiny_config, targets: str = "qkv,proj", r: int = 4) -> tuple[GPT, list[str]]:
    torch.manual_seed(0)
    model = GPT(tiny_config)
    adapted = add_lora(model, LoraSettings(r=r, alpha=8.0, targets=parse_targets(targets)))
    return model, adapted


def test_targets_match_whole_dotted_components(tiny_config):
    model = GPT(tiny_config)
    assert resolve_targets(model, ("qkv",)) == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    assert resolve_targets(model, ("attn.proj", "lm_head")) == [
        "blocks.0.attn.proj",
        "blocks.1.attn.proj",
        "lm_head",
    ]
    assert resolve_targets(model, ("mlp.proj",)) == ["blocks.0.mlp.proj", "blocks.1.mlp.proj"]
    assert resolve_targets(model, ("1.mlp.proj",)) == ["blocks.1.mlp.proj"]
    assert len(resolve_targets(model, ("proj",))) == 4  # attn.proj and mlp.proj of both blocks
    for partial in ("roj", "n.proj", "blocks.0.attn"):  # not whole components, or not a Linear
        with pytest.raises(ConfigError):
            resolve_targets(model, (partial,))


def test_module_names_are_grouped_by_block():
    names = [f"blocks.{i}.attn.qkv" for i in (0, 1, 2, 3, 5)] + ["blocks.4.mlp.fc", "lm_head"]
    assert group_module_names(names) == "blocks.{0-3,5}.attn.qkv, blocks.4.mlp.fc, lm_head"
    assert group_module_names(["blocks.0.attn.proj", "blocks.1.attn.proj"]) == (
        "blocks.{0,1}.attn.proj"
    )


def test_the_summary_lists_every_adapted_module(tiny_config):
    """A bare `proj` takes the MLP's projection too: the summary says so."""
    settings = LoraSettings(r=8, targets=("qkv", "proj"))
    adapted = resolve_targets(GPT(tiny_config), settings.targets)
    assert describe_adapted(settings, adapted) == (
        "LoRA r=8 on 6 modules: blocks.{0,1}.attn.qkv, blocks.{0,1}.attn.proj, "
        "blocks.{0,1}.mlp.proj"
    )


def test_targets_that_match_nothing_list_the_linear_modules(tiny_config):
    with pytest.raises(ConfigError) as caught:
        resolve_targets(GPT(tiny_config), ("qkv", "q_proj", "attn"))
    message = str(caught.value)
    assert "\n" not in message
    assert (
        "q_proj,attn match no Linear module; give names such as qkv, proj, fc, lm_head" in message
    )
    assert message.endswith(
        "blocks.{0,1}.attn.qkv, blocks.{0,1}.attn.proj, blocks.{0,1}.mlp.fc, "
        "blocks.{0,1}.mlp.proj, lm_head"
    )


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
def test_merged_model_equals_base_plus_adapter(tiny_config, targets, randomise_adapters):
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


def test_merging_leaves_the_wrapped_base_weights_alone(tiny_config, randomise_adapters):
    model, adapted = wrapped(tiny_config, "qkv,lm_head")
    randomise_adapters(model)
    before = {n: t.clone() for n, t in model.state_dict().items() if ".lora_" not in n}
    merged_model(model, merged_model_config(tiny_config, adapted))
    after = model.state_dict()
    assert all(torch.equal(after[name], tensor) for name, tensor in before.items())
