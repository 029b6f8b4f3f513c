"""DistillModule: LoRA (or full) fine-tuning of the LLM by one divergence.

- peft LoRA with targets, rank and alpha from config; ``lora: null`` trains all weights;
- optimizer and scheduler are ``_partial_`` callables from config;
- checkpoints hold the trainable weights (the adapter), optimizer and step — never the frozen base
  — so a killed run resumes from ``checkpoints/last.ckpt``; exporting a merged model is a separate,
  explicit step (``dsc.export``);
- reference log-probs (base model, adapters off) are computed once per example and cached, never
  recomputed per epoch;
- on-policy divergences (reverse_kl) sample from the current student inside ``training_step``.
"""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch

from dsc.backends.base import SamplingParams
from dsc.distill.datamodule import encode, pad_rows
from dsc.distill.divergences import Divergence
from dsc.seeding import derive_seed


class DistillModule(L.LightningModule):
    def __init__(self, model, tokenizer, divergence: Divergence, optimizer: Callable, lora: dict | None = None,
                 scheduler: Callable | None = None, reward=None, rollout: dict | None = None,
                 gradient_checkpointing: bool = False, max_length: int = 320, seed: int = 0):
        super().__init__()
        self.model, self.tokenizer, self.divergence = model, tokenizer, divergence
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.lora, self.reward, self.seed, self.max_length = lora, reward, seed, max_length
        self.rollout = SamplingParams(**(rollout or {}))
        self.gradient_checkpointing = gradient_checkpointing
        self.strict_loading = False  # checkpoints carry the adapter only; the base comes from the model files
        self._reference: dict[int, torch.Tensor] = {}
        self._wrap()

    def _wrap(self) -> None:
        from peft import LoraConfig, PeftModel, get_peft_model

        if self.lora is not None and not isinstance(self.model, PeftModel):
            # LoRA's A matrices are drawn from the global RNG: seed it from the run's seed (same seed, same
            # adapter init, on every rank) and leave the global state as it was. Only this rank's GPU is
            # forked (fork_rng's default walks every visible device, and warns about it under DDP).
            device = next(self.model.parameters()).device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(derive_seed(self.seed, "lora_init"))
                self.model = get_peft_model(self.model, LoraConfig(task_type="CAUSAL_LM", **self.lora))
        if self.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.model.enable_input_require_grads()

    # ── log-probs ───────────────────────────────────────────────────────────────────────────────
    def sequence_logprobs(self, input_ids, attention_mask, loss_mask) -> torch.Tensor:
        """Σ over response tokens of log p_θ(token | prefix); prompt and padding contribute nothing."""
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
        targets = input_ids[:, 1:]
        token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
        return (token_logp * loss_mask[:, 1:].to(token_logp.dtype)).sum(-1)

    @torch.no_grad()
    def reference_logprobs(self, batch, cache_keys: list[int] | None = None) -> torch.Tensor:
        if cache_keys is not None and all(k in self._reference for k in cache_keys):
            return torch.stack([self._reference[k] for k in cache_keys]).to(self.device)
        with self._base_model():
            values = self.sequence_logprobs(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        if cache_keys is not None:
            for key, value in zip(cache_keys, values.detach().cpu()):
                self._reference[key] = value
        return values

    def _base_model(self):
        from contextlib import nullcontext

        return self.model.disable_adapter() if hasattr(self.model, "disable_adapter") else nullcontext()

    # ── training ────────────────────────────────────────────────────────────────────────────────
    def on_fit_start(self) -> None:
        # load_model hands the model over in eval mode and Lightning keeps a module's mode: without
        # this, LoRA dropout and gradient checkpointing (active only in train mode) would be off.
        self.model.train()

    def on_fit_end(self) -> None:
        self.model.eval()  # the trained student generates next (evaluation): no dropout

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.divergence.on_policy:
            batch = self._rollout(batch)
        logp = self.sequence_logprobs(batch["input_ids"], batch["attention_mask"], batch["loss_mask"])
        ref = None
        if self.divergence.needs_reference:
            keys = None
            if not self.divergence.on_policy:  # fixed data: cache by example (pairs: chosen k, rejected −k−1)
                index = batch["index"].tolist()
                keys = index + [-i - 1 for i in index] if self.divergence.data == "pairs" else index
            ref = self.reference_logprobs(batch, keys)
        loss, metrics = self.divergence(logp, batch, ref)
        tokens = batch["loss_mask"].sum()
        self.log("train/loss", loss, prog_bar=True, batch_size=logp.shape[0])
        self.log("train/response_tokens", tokens.float(), reduce_fx="sum", batch_size=logp.shape[0])
        for name, value in metrics.items():
            self.log(f"train/{name}", value, batch_size=logp.shape[0])
        return loss

    @torch.no_grad()
    def _rollout(self, batch) -> dict[str, Any]:
        """k samples per prompt from the current student, scored by the reward (reverse_kl)."""
        from dsc.backends.hf import HFBackend
        from dsc.chat import user_chat

        k = self.divergence.k
        prompts = [p for p in batch["prompts"] for _ in range(k)]
        seeds = [derive_seed(self.seed, "rollout", self.global_step, i, p) for i, p in enumerate(prompts)]
        was_training = self.model.training
        self.model.eval()
        backend = HFBackend(model=None, loaded=(self.model, self.tokenizer, "student"))
        outs = backend.generate([user_chat(p) for p in prompts], self.rollout, seeds)
        self.model.train(was_training)
        rewards = torch.as_tensor(self.reward.score(prompts, [o.text for o in outs]), dtype=torch.float32)
        rows = [encode(self.tokenizer, p, o.text, self.max_length) for p, o in zip(prompts, outs)]
        padded = {k_: v.to(self.device) for k_, v in pad_rows(rows, self.tokenizer.pad_token_id).items()}
        return {**padded, "reward": rewards.to(self.device), "prompts": prompts}

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, num_training_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ── checkpoints: trainable weights only ────────────────────────────────────────────────────
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.named_parameters() if p.requires_grad}
