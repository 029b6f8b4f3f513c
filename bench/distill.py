"""P3: training tokens/s and peak RSS of dsc's DistillModule (Lightning) vs TRL's SFTTrainer.

    python bench/distill.py --quick      # last line: P3 ratio_vs_trl=<x> rss_ratio=<y>
    python bench/distill.py --precision bf16-mixed --steps 12

Same model (the bundled SmolLM2-135M), LoRA (r=8, α=16, q/v, no dropout), AdamW (lr 5e-4, clip 1.0),
batch, token ids (the examples are encoded once with dsc's ``encode`` and handed to TRL pre-tokenised
with their completion mask) and precision:
- ``bf16`` (default, dsc's default on bf16 CPUs): weights loaded in bf16, adapters in fp32, no autocast
  (Lightning ``32-true``; TRL ``bf16=False``);
- ``bf16-mixed``: fp32 weights under bf16 autocast (Lightning ``bf16-mixed``; TRL ``bf16=True``);
- ``fp32``.
Each arm runs in its own fresh process (peak RSS = ``getrusage`` maxrss of that process); tokens/s is
the median over ≥ 3 timed windows after a warm-up step. TRL is a bench-only dependency
(``pip install trl``). JSON in bench/results/distill.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load, machine, median, set_threads, write_json  # noqa: E402  (before torch)

LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
LR = 5e-4


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 8 × 256 tokens, 1 warm-up + 3 timed steps per arm")
    p.add_argument("--arm", choices=["dsc", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="bf16", choices=["bf16", "bf16-mixed", "fp32"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=256, help="tokens per sequence (prompt + response)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per arm (median of per-step times)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def examples(tokenizer, count: int, length: int):
    """``count`` (prompt, response, ids, loss mask) of exactly ``length`` tokens, encoded by dsc."""
    import random

    from dsc.distill.datamodule import encode
    from dsc.prompts import NegativeReviewPrompts

    prompts = [p.text for p in NegativeReviewPrompts().load()][:count]
    words = ("the film is a slow and muddled story whose actors seem lost yet the score and the "
             "photography carry several scenes with real warmth and the ending lands").split()
    rng = random.Random(0)
    out = []
    for prompt in prompts:
        response = " ".join(rng.choice(words) for _ in range(length))
        ids, mask = encode(tokenizer, prompt, response, length)
        assert len(ids) == length, "response too short to fill the sequence"
        out.append((prompt, response, ids, mask))
    return out


def load_model(precision: str):
    import torch

    from dsc.models import ModelSpec, load_model as load

    model, tokenizer, _ = load(ModelSpec(dtype="bfloat16" if precision == "bf16" else "float32"))
    model.train()
    return model, tokenizer, torch


def run_dsc(args, data) -> list[float]:
    import functools
    import time

    import lightning as L
    import torch

    from dsc.distill.datamodule import DSCDataModule
    from dsc.distill.divergences import ForwardKL
    from dsc.distill.examples import Example
    from dsc.distill.module import DistillModule

    model, tokenizer, _ = load_model(args.precision)
    module = DistillModule(model, tokenizer, ForwardKL(), functools.partial(torch.optim.AdamW, lr=LR, weight_decay=0.0),
                           lora=dict(LORA), gradient_checkpointing=args.gradient_checkpointing, max_length=args.length)
    data_module = DSCDataModule(tokenizer, ForwardKL(), sample_shard=lambda rank, world: None, load_records=list,
                                train_prompts=list, batch_size=args.batch, max_length=args.length)
    data_module.setup = lambda stage=None: None
    data_module.items = [Example(prompt_id=str(i), prompt=p, response=r, reward=0.0) for i, (p, r, _, _) in enumerate(data)]
    times: list[float] = []

    class StepTimer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.started = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            times.append(time.perf_counter() - self.started)

    precision = {"bf16": "32-true", "bf16-mixed": "bf16-mixed", "fp32": "32-true"}[args.precision]
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, max_steps=1 + args.steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0, num_sanity_val_steps=0, callbacks=[StepTimer()])
    trainer.fit(module, datamodule=data_module)
    return times[1:]


def run_trl(args, data) -> list[float]:
    import time

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    model, tokenizer, _ = load_model(args.precision)
    dataset = Dataset.from_dict({"input_ids": [ids for _, _, ids, _ in data],
                                 "completion_mask": [mask for _, _, _, mask in data]})
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.started = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.started)

    with tempfile.TemporaryDirectory() as folder:
        config = SFTConfig(output_dir=folder, per_device_train_batch_size=args.batch, max_steps=1 + args.steps,
                           learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                           max_grad_norm=1.0, optim="adamw_torch", bf16=args.precision == "bf16-mixed",
                           use_cpu=True, report_to="none", save_strategy="no", logging_steps=10_000,
                           dataloader_num_workers=0, max_length=args.length, packing=False,
                           completion_only_loss=True, gradient_checkpointing=args.gradient_checkpointing,
                           disable_tqdm=True, seed=0)
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA), callbacks=[StepTimer()])
        trainer.train()
    return times[1:]


def arm_main(args) -> None:
    import resource

    threads = set_threads(args.threads)
    from dsc.models import ModelSpec, load_model as load

    _, tokenizer, _ = load(ModelSpec(dtype="bfloat16"))
    data = examples(tokenizer, args.batch * (1 + args.steps), args.length)
    times = (run_dsc if args.arm == "dsc" else run_trl)(args, data)
    tokens = args.batch * args.length
    print("RESULT " + json.dumps({"arm": args.arm, "threads": threads, "step_seconds": times,
                                  "tokens_per_s": tokens / median(times),
                                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def main() -> None:
    args = parse()
    args.steps = args.steps or (3 if args.quick else 8)
    if args.arm:
        return arm_main(args)
    try:
        import trl
    except ImportError:
        sys.exit("bench/distill.py needs TRL for its baseline: pip install trl (a bench-only dependency)")
    load_start = load()
    print(f"machine: {machine()}  load {load_start}  threads {args.threads}  precision {args.precision}  "
          f"batch {args.batch} × {args.length} tokens  trl {trl.__version__}", flush=True)
    results = {}
    for arm in ("trl", "dsc"):
        command = [sys.executable, __file__, "--arm", arm, "--threads", str(args.threads), "--precision", args.precision,
                   "--batch", str(args.batch), "--length", str(args.length), "--steps", str(args.steps)]
        command += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            sys.exit(f"arm {arm} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        results[arm] = json.loads(lines[-1][len("RESULT "):])
        r = results[arm]
        print(f"  {arm}: {r['tokens_per_s']:.0f} tok/s (steps {[round(t, 2) for t in r['step_seconds']]} s), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB; load {load()}", flush=True)
    ratio = results["dsc"]["tokens_per_s"] / results["trl"]["tokens_per_s"]
    rss = results["dsc"]["peak_rss_mb"] / results["trl"]["peak_rss_mb"]
    payload = {"machine": machine(), "load_start": load_start, "load_end": load(), "precision": args.precision,
               "batch": args.batch, "length": args.length, "lora": LORA, "trl": trl.__version__,
               "gradient_checkpointing": args.gradient_checkpointing, "arms": results,
               "ratio_vs_trl": ratio, "rss_ratio": rss}
    path = write_json("distill.json", payload, args.out)
    print(f"baseline TRL SFTTrainer: {results['trl']['tokens_per_s']:.0f} tok/s, {results['trl']['peak_rss_mb']:.0f} MB; "
          f"candidate dsc DistillModule: {results['dsc']['tokens_per_s']:.0f} tok/s, {results['dsc']['peak_rss_mb']:.0f} MB")
    print(f"load average start {load_start} end {payload['load_end']}; wrote {path}")
    print(f"P3 ratio_vs_trl={ratio:.2f} rss_ratio={rss:.2f}")


if __name__ == "__main__":
    main()
