"""`python -m dsc.export <run_dir> [--out DIR]`: the explicit export step.

Merges a finished run's LoRA adapter (``run_dir/adapter``) into its base model and writes a plain
Hugging Face folder — safetensors weights, config, generation config and tokenizer — that loads with
``AutoModelForCausalLM.from_pretrained`` alone (no peft, no dsc). Guarantees:

- the base is the run's own ``model`` section of ``run_dir/config.yaml`` (same GGUF/folder, same
  weights hash), loaded with ``dsc.models.load_model``;
- the merged model's logits equal the adapter model's up to float rounding (``merge_and_unload``);
- a quantizer marker (GGUF-loaded models) is dropped before saving, so ``save_pretrained`` writes
  dense weights instead of refusing;
- a full fine-tuning run (``distill.module.lora: null``, whose ``adapter/`` already holds a whole
  model) is re-saved with its tokenizer;
- an existing, non-empty output folder is never overwritten unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from omegaconf import OmegaConf  # noqa: E402

from dsc.errors import DscError, fail  # noqa: E402
from dsc.models import ModelSpec, drop_quantizer_marker, load_model  # noqa: E402


def model_spec(run_dir: Path, dtype: str | None = None, device: str | None = None) -> ModelSpec:
    """The run's base model, from ``run_dir/config.yaml`` (optionally another dtype or device)."""
    path = run_dir / "config.yaml"
    if not path.exists():
        raise DscError(f"run_dir={run_dir} has no config.yaml; point it at a folder made by python -m dsc")
    cfg = OmegaConf.load(path)
    if cfg.get("model") is None:
        raise DscError(f"run_dir={run_dir}: config.yaml has no model section; re-run the distillation there")
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    values = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k in fields}
    if dtype is not None:
        values["dtype"] = dtype
    if device is not None:
        values["device"] = device
    return ModelSpec(**values)


def merged_model(run_dir: Path, dtype: str | None = None, device: str | None = None):
    """(merged plain transformers model in eval mode, tokenizer, base model identity)."""
    adapter = run_dir / "adapter"
    is_lora = (adapter / "adapter_config.json").exists()
    is_full = (adapter / "config.json").exists()
    if not (is_lora or is_full):
        raise DscError(f"run_dir={run_dir} has no trained adapter (adapter/adapter_config.json); "
                       "run python -m dsc stage=distill there first")
    spec = model_spec(run_dir, dtype, device)
    base, tokenizer, identity = load_model(spec)
    if is_lora:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    else:  # full fine-tuning: adapter/ holds the whole trained model
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(adapter, dtype=base.dtype, use_safetensors=True)
        model.to(spec.device)
    drop_quantizer_marker(model)
    return model.eval(), tokenizer, identity


def export(run_dir: str | Path, out: str | Path | None = None, dtype: str | None = None,
           device: str | None = None, overwrite: bool = False) -> Path:
    """Write the merged model of ``run_dir`` to ``out`` (default ``run_dir/merged``); returns ``out``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DscError(f"run_dir={run_dir} does not exist; pass a run folder made by python -m dsc")
    out = Path(out) if out is not None else run_dir / "merged"
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DscError(f"--out={out} exists and is not empty; pass another --out or --overwrite")
    model, tokenizer, identity = merged_model(run_dir, dtype, device)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "dsc_export.json").write_text(json.dumps(
        {"run_dir": str(run_dir.resolve()), "adapter": str((run_dir / "adapter").resolve()), "base_model": identity,
         "dtype": str(model.dtype).removeprefix("torch.")}, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m dsc.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run folder made by python -m dsc (holds config.yaml and adapter/)")
    parser.add_argument("--out", default=None, help="output folder (default: <run_dir>/merged)")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the run's model.dtype)")
    parser.add_argument("--device", default=None, help="where to merge: cpu | cuda (default: the run's model.device)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    args = parser.parse_args(argv)
    out = export(args.run_dir, args.out, args.dtype, args.device, args.overwrite)
    print(f"exported merged model to {out}")
    return out


if __name__ == "__main__":
    try:
        main()
    except DscError as error:
        fail(error)
