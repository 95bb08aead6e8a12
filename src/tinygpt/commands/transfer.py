"""`tinygpt export`, `import-hf` and `finetune`: a run carried to or from Hugging Face's
format (or out to llama.cpp's GGUF), or adapted to new text as a new run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from tinygpt.commands.arguments import add_field_flags, field_overrides
from tinygpt.commands.runs import add_run_flags
from tinygpt.errors import ConfigError, require_package

if TYPE_CHECKING:
    from tinygpt.commands.arguments import Commands

EXPORT_FORMATS = ("hf", "gguf")
# llama.cpp's converter's default for a float model too: half of f32, at a small logit change
DEFAULT_GGUF_QUANT = "f16"

FINETUNE_DESCRIPTION = (
    "Train low-rank adapters (peft LoRA) on the Linear modules named by "
    "--lora-targets, everything else frozen: a target takes every module whose name ends with "
    "the target's dot-separated parts (blocks.N.attn.qkv, attn.proj, mlp.fc, mlp.proj, "
    "lm_head; a bare proj is both attn.proj and mlp.proj), and the adapted modules are "
    "listed. SOURCE is tokenized with RUN_DIR's tokenizer. NEW_RUN_DIR gets the merged model "
    "as a normal run (sample, eval, export) and the adapter alone in NEW_RUN_DIR/adapter, in "
    "peft's layout for RUN_DIR's `tinygpt export`. Training fields (--max_iters, "
    "--learning_rate, ...) default to RUN_DIR's, except that the learning rate decays over "
    "this run's max_iters unless --lr_decay_iters is given, and the warm-up is at most a "
    "tenth of max_iters unless --warmup_iters is given."
)


def add_export_command(commands: Commands) -> None:
    export = commands.add_parser(
        "export",
        help="write a run as a Hugging Face transformers model directory or a GGUF file",
        usage="tinygpt export RUN_DIR --format hf --out DIR [--checkpoint best]\n"
        "       tinygpt export RUN_DIR --format gguf --out FILE.gguf [--quant f16] "
        "[--checkpoint best]",
        description="Write RUN_DIR's checkpoint as config.json, model.safetensors and tokenizer "
        "files that transformers' AutoModelForCausalLM and AutoTokenizer load without tinygpt: "
        "the GPT-2 block as GPT2LMHeadModel, the Llama block (rope, rmsnorm, swiglu) as "
        "LlamaForCausalLM, other models with their own code (trust_remote_code). With "
        "--format gguf, write one GGUF file that llama.cpp and Ollama run: the GPT-2 block as "
        "llama.cpp's gpt2, the Llama block as its llama, with the tokenizer (bpe, gpt2 or "
        "sentencepiece) inside.",
    )
    add_run_flags(export, device=False)
    export.add_argument(
        "--format", default="hf", choices=EXPORT_FORMATS, help="hf: Hugging Face; gguf: llama.cpp"
    )
    export.add_argument(
        "--out", type=Path, required=True, metavar="DIR|FILE", help="a new directory (hf) or file"
    )
    export.add_argument(
        "--quant",
        default=None,
        metavar="f32|f16|q8_0",
        help=f"gguf only: how matrices are stored (default {DEFAULT_GGUF_QUANT}: half the size of "
        "f32 and llama.cpp's usual choice; q8_0: a quarter, 8 bits per value)",
    )
    export.set_defaults(handler=run_export)


def add_import_hf_command(commands: Commands) -> None:
    import_hf = commands.add_parser(
        "import-hf",
        help="turn a Hugging Face GPT-2 or Llama model directory into a run",
        usage="tinygpt import-hf DIR --out RUN_DIR",
        description="Read a GPT2LMHeadModel or LlamaForCausalLM directory (config.json, "
        "safetensors weights, tokenizer) into a new run that sample, eval, chat and finetune use.",
    )
    import_hf.add_argument("hf_dir", type=Path, metavar="DIR")
    import_hf.add_argument("--out", type=Path, required=True, metavar="RUN_DIR")
    import_hf.set_defaults(handler=run_import_hf)


def add_finetune_command(commands: Commands) -> None:
    finetune = commands.add_parser(
        "finetune",
        help="LoRA fine-tune a trained run on new text, into a new run",
        usage="tinygpt finetune RUN_DIR --data SOURCE --out NEW_RUN_DIR [--lora-r 8] "
        "[--lora-alpha 16] [--lora-targets qkv,proj] [--lora-dropout 0.05] [--checkpoint best] "
        "[--FIELD VALUE ...]",
        description=FINETUNE_DESCRIPTION,
    )
    add_run_flags(finetune, device=False, run_help="the base run")
    finetune.add_argument(
        "--data",
        dest="data.source",
        default=argparse.SUPPRESS,
        metavar="SOURCE",
        help="text to fine-tune on (any source `train` takes)",
    )
    finetune.add_argument("--out", type=Path, required=True, metavar="NEW_RUN_DIR")
    finetune.add_argument("--lora-r", type=int, default=8, dest="lora_r", help="rank of B A")
    finetune.add_argument(
        "--lora-alpha", type=float, default=16.0, dest="lora_alpha", help="scale alpha / r"
    )
    finetune.add_argument(
        "--lora-targets", default="qkv,proj", dest="lora_targets", help="e.g. qkv,attn.proj,fc"
    )
    finetune.add_argument("--lora-dropout", type=float, default=0.05, dest="lora_dropout")
    add_field_flags(finetune, sections=("data", "train"))
    finetune.set_defaults(handler=run_finetune)


def run_export(args: argparse.Namespace) -> int:
    if args.format == "gguf":
        return _export_gguf(args)
    if args.quant is not None:
        raise ConfigError(
            "--quant is for --format gguf; a Hugging Face export keeps the run's dtype"
        )
    from tinygpt.export.hf import export_hf

    result = export_hf(args.run_dir, args.out, args.checkpoint)
    print(
        f"wrote {result.directory}: {result.model_class} with a {result.tokenizer_kind} "
        f"tokenizer; load it with transformers.AutoModelForCausalLM.from_pretrained and "
        f"AutoTokenizer.from_pretrained"
    )
    return 0


def _export_gguf(args: argparse.Namespace) -> int:
    require_package("gguf", "gguf", "--format gguf")
    from tinygpt.export.gguf_export import export_gguf

    result = export_gguf(args.run_dir, args.out, args.quant or DEFAULT_GGUF_QUANT, args.checkpoint)
    print(
        f"wrote {result.path}: llama.cpp's {result.architecture} architecture, {result.quant}, "
        f"with a {result.tokenizer_kind} tokenizer, {result.size_bytes / 1e6:,.1f} MB; run it "
        f"with llama.cpp (llama-cli -m {result.path}) or Ollama (a Modelfile that says "
        f"FROM {result.path})"
    )
    return 0


def run_import_hf(args: argparse.Namespace) -> int:
    from tinygpt.export.hf_import import import_hf

    result = import_hf(args.hf_dir, args.out)
    print(
        f"wrote {result.run_dir}: {result.model_class} as a run with a {result.tokenizer_kind} "
        f"tokenizer; try: tinygpt sample {result.run_dir}"
    )
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from tinygpt.finetune.loop import start_finetune  # torch and peft only when needed
    from tinygpt.finetune.lora import LoraSettings, parse_targets

    overrides = field_overrides(args)
    source = overrides.pop("data.source", None)
    if source is None:
        raise ConfigError("give --data SOURCE, the text to fine-tune on")
    settings = LoraSettings(
        r=args.lora_r,
        alpha=args.lora_alpha,
        targets=parse_targets(args.lora_targets),
        dropout=args.lora_dropout,
    )
    finetuner = start_finetune(
        args.run_dir, args.out, source, settings, overrides, checkpoint=args.checkpoint
    )
    print(finetuner.parameter_summary(), flush=True)
    result = finetuner.fit()
    if result.stop_reason == "interrupted":
        print(f"stopped at step {result.step}; the merged model so far is in {result.run_dir}")
        return 130
    print(
        f"finished at step {result.step} ({result.stop_reason}); best val loss "
        f"{result.best_val_loss:.4f}; adapter in {result.run_dir / 'adapter'}; sample with: "
        f"tinygpt sample {result.run_dir}"
    )
    return 0
