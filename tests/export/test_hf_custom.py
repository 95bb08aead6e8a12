"""Models transformers has no class for, exported with their own code: loaded by
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` in a process where tinygpt
cannot be imported, they give tinygpt's logits and greedy tokens, and their chat template
renders the training format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli
from greedy_decoding import greedy

from tinygpt.data.chat_format import Conversation, render_text
from tinygpt.run.load import load_model_from_run

LLAMA = {"norm": "rmsnorm", "position": "rope", "ffn": "swiglu", "bias": False}
CUSTOM = {
    "hybrid": {"attention": "hybrid", "local_window": 4},
    "hybrid-llama-gqa": {**LLAMA, "attention": "hybrid", "n_kv_head": 2},
    "adaptive": {"output": "adaptive", "tie_weights": False},
    "geglu": {**LLAMA, "ffn": "geglu"},
    "mixed-blocks": {"norm": "rmsnorm"},  # learned positions with RMSNorm: neither block
    "speedrun-ideas": {"qk_norm": True, "logit_softcap": 30.0, "embed_mix": True},
}
PROMPT = "Before we proceed"
STEPS = 12
TURNS = (("Hi there! Are you open?", "Hello, we are open until 9."),)
MESSAGES = [{"role": "user", "content": TURNS[0][0]}, {"role": "assistant", "content": TURNS[0][1]}]
SETTINGS = json.dumps({"steps": STEPS, "messages": MESSAGES})

# run in a fresh interpreter that cannot import tinygpt: what a user without it gets
WITHOUT_TINYGPT = """
import json, sys

class NoTinygpt:
    def find_spec(self, name, path=None, target=None):
        if name == "tinygpt" or name.startswith("tinygpt."):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NoTinygpt())
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

prompt, settings, directories = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
results = {}
for directory in directories:
    model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=True)
    ids = torch.tensor([tokenizer.encode(prompt)])
    with torch.no_grad():
        logits = model(ids).logits[0]
    out = model.generate(ids, do_sample=False, max_new_tokens=settings["steps"])
    results[directory] = {
        "ids": ids[0].tolist(),
        "logits": logits.tolist(),
        "generated": out[0, ids.size(1):].tolist(),
        "chat": tokenizer.apply_chat_template(settings["messages"], tokenize=False),
    }
results["tinygpt_imported"] = any(name.startswith("tinygpt") for name in sys.modules)
print(json.dumps(results))
"""


def load_without_tinygpt(directories: list[Path], tmp_path: Path) -> dict:
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "hf_modules"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TINYGPT, PROMPT, SETTINGS, *map(str, directories)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def export(capsys, run_dir: Path, out: Path) -> Path:
    code, stdout, err = run_cli(capsys, "export", run_dir, "--format", "hf", "--out", out)
    assert code == 0, err
    assert "TinyGPTForCausalLM (trust_remote_code)" in stdout
    return out


def test_every_custom_variant_loads_without_tinygpt_with_our_logits_and_greedy_text(
    make_run, bpe, capsys, tmp_path
):
    runs = {name: make_run(name, tokenizer=bpe, **fields) for name, fields in CUSTOM.items()}
    exported = {name: export(capsys, run_dir, tmp_path / f"{name}-hf") for name, (run_dir, _, _)
                in runs.items()}  # fmt: skip
    loaded = load_without_tinygpt(list(exported.values()), tmp_path)
    assert loaded.pop("tinygpt_imported") is False
    chat_text = render_text(Conversation(TURNS))
    for name, (_, model, tokenizer) in runs.items():
        theirs = loaded[str(exported[name])]
        ids = tokenizer.encode(PROMPT)
        assert theirs["ids"] == ids, name
        with torch.no_grad():
            ours = model(torch.tensor([ids]))[0]
        difference = (ours - torch.tensor(theirs["logits"])).abs().max().item()
        assert difference < 1e-4, (name, difference)
        expected = greedy(model, ids, STEPS)
        generated = theirs["generated"]  # generate() stops at end-of-text; we do not
        assert generated == expected[: len(generated)], name
        assert len(generated) == STEPS or generated[-1] == tokenizer.eot_id, name
        assert theirs["chat"] == chat_text, name  # the dialog format the model trained on


def test_a_custom_export_imports_back_to_identical_weights(make_run, capsys, tmp_path):
    for name in ("hybrid", "adaptive"):
        run_dir, model, _ = make_run(name, **CUSTOM[name])
        hf_dir = export(capsys, run_dir, tmp_path / f"{name}-hf")
        code, _, err = run_cli(capsys, "import-hf", hf_dir, "--out", tmp_path / f"{name}-back")
        assert code == 0, err
        back, _, config = load_model_from_run(tmp_path / f"{name}-back")
        assert config.model == model.config
        for key, tensor in model.state_dict().items():
            assert torch.equal(tensor, back.state_dict()[key]), (name, key)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_native_blocks_keep_their_transformers_class(name, make_run, capsys, tmp_path):
    run_dir, _, _ = make_run(name, **({} if name == "gpt2" else LLAMA))
    code, _, err = run_cli(capsys, "export", run_dir, "--out", tmp_path / "hf")
    assert code == 0, err
    document = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert document["model_type"] == name and "auto_map" not in document
    assert not list((tmp_path / "hf").glob("*.py"))
