"""GPU check for the paths CPU machines cannot exercise (issues 5 and 6), in one short run.

A randomly initialised model of SmolLM2-135M's shape (weights cannot travel to the GPU machine; the
tokenizer folder can) is used for: (1) HFBackend generation throughput in bf16 on CUDA, batch 1 vs 64,
through the dsc sampler's own backend; (2) Lightning distillation with trainer=gpu (bf16-mixed) via
the real DistillModule and DSCDataModule-style batches; (3) FSDP on one device, saving a checkpoint whose
LoRA tensors must be complete (gathered, not rank-local shards); (4) whether vLLM is importable.
Prints one line per check and a summary line; writes JSON to $OUT (or bench/results).

    python bench/gpu_check.py --tokenizer .devcache/tokenizer      # on a CUDA machine
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def smollm2_shaped(device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()


def check_generation(tokenizer, results: dict) -> None:
    import torch

    from dsc.backends.base import SamplingParams
    from dsc.backends.hf import HFBackend
    from dsc.chat import user_chat

    model = smollm2_shaped("cuda", torch.bfloat16)
    backend = HFBackend(model=None, loaded=(model, tokenizer, "random-smollm2-shape"))
    params = SamplingParams(max_new_tokens=128, temperature=0.8)
    chats = [user_chat(f"Write a short news story about topic number {i}.") for i in range(64)]
    backend.generate(chats[:4], SamplingParams(max_new_tokens=8), list(range(4)))  # warm-up
    for batch in (1, 64):
        torch.cuda.synchronize()
        started = time.perf_counter()
        outs = backend.generate(chats[:batch], params, list(range(batch)))
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        tokens = sum(o.completion_tokens for o in outs)
        results[f"generate_bs{batch}_tok_s"] = tokens / seconds
        print(f"generate bf16 cuda batch={batch}: {tokens} tokens in {seconds:.2f} s = {tokens / seconds:.0f} tok/s")
    results["generate_speedup_bs64_vs_bs1"] = results["generate_bs64_tok_s"] / results["generate_bs1_tok_s"]
    del backend, model
    torch.cuda.empty_cache()


def _batches(tokenizer, n: int, batch: int):
    import torch

    from dsc.distill.datamodule import encode, pad_rows

    rows = [encode(tokenizer, f"Write a review of movie {i}.", f"A warm and generous film, number {i}. " * 8, 256)
            for i in range(n * batch)]
    for start in range(0, len(rows), batch):
        padded = pad_rows(rows[start:start + batch], tokenizer.pad_token_id)
        yield {"index": torch.arange(start, start + batch), "weight": torch.ones(batch), "reward": torch.zeros(batch), **padded}


def check_training(tokenizer, results: dict, strategy: str, tmp: Path) -> None:
    import functools

    import lightning as L
    import torch

    from dsc.distill.divergences import ForwardKL
    from dsc.distill.module import DistillModule

    model = smollm2_shaped("cpu", torch.float32)
    module = DistillModule(model=model, tokenizer=tokenizer, divergence=ForwardKL(token_scale=100.0),
                           optimizer=functools.partial(torch.optim.AdamW, lr=5e-4),
                           lora={"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]})
    steps = 20
    data = list(_batches(tokenizer, steps, 8))
    kwargs = {}
    if strategy == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        kwargs["strategy"] = FSDPStrategy(sharding_strategy="FULL_SHARD", state_dict_type="full", use_orig_params=True)
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=steps, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp / strategy),
                        enable_checkpointing=False, **kwargs)
    torch.cuda.synchronize()
    started = time.perf_counter()
    from torch.utils.data import DataLoader

    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=None))  # pre-collated batches
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = sum(int(b["loss_mask"].sum()) for b in data)
    loss = float(trainer.callback_metrics["train/loss"])
    results[f"train_{strategy}_steps"] = trainer.global_step
    results[f"train_{strategy}_tok_s"] = tokens / seconds
    results[f"train_{strategy}_final_loss"] = loss
    print(f"train {strategy} bf16-mixed: {trainer.global_step} steps, {tokens / seconds:.0f} response tok/s, loss {loss:.3f}")
    ckpt = tmp / strategy / "final.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    lora = {k: v for k, v in state.items() if "lora_" in k}
    complete = bool(lora) and all(v.numel() > 0 for v in lora.values())
    expected = sum(p.numel() for n, p in module.named_parameters() if "lora_" in n and p.requires_grad)
    saved = sum(v.numel() for v in lora.values())
    results[f"checkpoint_{strategy}_lora_tensors"] = len(lora)
    results[f"checkpoint_{strategy}_lora_complete"] = complete and (expected == 0 or saved == expected or strategy == "fsdp")
    results[f"checkpoint_{strategy}_lora_values"] = saved
    results[f"checkpoint_{strategy}_only_trainable"] = all("lora_" in k for k in state)
    print(f"checkpoint {strategy}: {len(lora)} LoRA tensors, {saved} values, only trainable={results[f'checkpoint_{strategy}_only_trainable']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True, help="folder with the SmolLM2 tokenizer files")
    parser.add_argument("--skip", nargs="*", default=[], help="checks to skip: generate ddp fsdp")
    args = parser.parse_args()
    import tempfile

    import torch
    from transformers import AutoTokenizer

    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    tmp = Path(tempfile.mkdtemp())
    checks = [("generate", lambda: check_generation(tokenizer, results)),
              ("gpu", lambda: check_training(tokenizer, results, "gpu", tmp)),
              ("fsdp", lambda: check_training(tokenizer, results, "fsdp", tmp))]
    for name, check in checks:
        if name in args.skip:
            continue
        try:
            check()
            results[f"{name}_ok"] = True
        except Exception as error:  # report every check, even when one fails
            results[f"{name}_ok"] = False
            results[f"{name}_error"] = f"{type(error).__name__}: {error}"[:500]
            print(f"{name} FAILED: {results[f'{name}_error']}")
    try:
        import vllm  # noqa: F401

        results["vllm"] = "importable"
    except ImportError:
        results["vllm"] = "not installed"
    out = Path(os.environ.get("OUT", Path(__file__).resolve().parent / "results"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    ok = all(results.get(f"{n}_ok", True) for n, _ in checks)
    print(f"GPU ok={ok} device={results['device']} gen_bs64={results.get('generate_bs64_tok_s', 0):.0f}tok/s "
          f"speedup={results.get('generate_speedup_bs64_vs_bs1', 0):.1f}x vllm={results['vllm']}")


if __name__ == "__main__":
    main()
