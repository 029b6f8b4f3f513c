"""DSCDataModule: the sample store in, tokenised training batches out.

In ``setup`` each rank samples its shard of the prompts (prompts[rank::world_size]) into its own
store shard — unless the divergence is on-policy and needs no chain samples — then all ranks meet at
a barrier and every rank builds its training set from the merged store. On one process this is simply
the whole set. Loss masks cover the response tokens only: never the prompt, never a critique (the
student sees only c).
"""

from __future__ import annotations

from typing import Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from dsc.chat import prompt_and_response_ids, user_chat
from dsc.distill.divergences import Divergence
from dsc.distill.examples import chain_targets, importance_weighted_initial, preference_pairs
from dsc.records import ChainStep, Prompt


class _ListDataset(Dataset):
    def __init__(self, items: Sequence):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return index, self.items[index]


def encode(tokenizer, prompt: str, response: str, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, loss mask) for prompt+response; the response is cut from the right to fit."""
    prompt_ids, response_ids = prompt_and_response_ids(tokenizer, user_chat(prompt), response)
    response_ids = response_ids[: max(1, max_length - len(prompt_ids))]
    return prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids)


def pad_rows(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    return {
        "input_ids": torch.tensor([ids + [pad_id] * (width - len(ids)) for ids, _ in rows]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
        "loss_mask": torch.tensor([mask + [0] * (width - len(mask)) for _, mask in rows]),
    }


class DSCDataModule(L.LightningDataModule):
    def __init__(self, tokenizer, divergence: Divergence, sample_shard: Callable[[int, int], None],
                 load_records: Callable[[], list[ChainStep]], train_prompts: Callable[[], list[Prompt]],
                 target: str = "final_state", beta: float = 1.0, batch_size: int = 8, max_length: int = 320,
                 seed: int = 0):
        super().__init__()
        self.tokenizer, self.divergence = tokenizer, divergence
        self.sample_shard, self.load_records, self.train_prompts = sample_shard, load_records, train_prompts
        self.target, self.beta, self.batch_size, self.max_length, self.seed = target, beta, batch_size, max_length, seed
        self.items: list = []

    def setup(self, stage: str | None = None) -> None:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        if self.divergence.data == "prompts":
            self.items = [p.text for p in self.train_prompts()]
            return
        self.sample_shard(rank, world)
        if self.trainer is not None:
            self.trainer.strategy.barrier("dsc-sampling")
        self.items = self.build(self.load_records())

    def build(self, records: list[ChainStep]) -> list:
        kind = self.divergence.data
        if kind == "targets":
            return chain_targets(records, self.target)
        if kind == "weighted_initial":
            return importance_weighted_initial(records, self.beta)
        if kind == "pairs":
            return preference_pairs(records, getattr(self.divergence, "pairs", "final_vs_initial"))
        raise ValueError(f"unknown divergence data kind {kind}")

    def collate(self, batch):
        indices = torch.tensor([i for i, _ in batch])
        items = [item for _, item in batch]
        pad = self.tokenizer.pad_token_id
        if self.divergence.data == "prompts":
            return {"index": indices, "prompts": items}
        if self.divergence.data == "pairs":
            rows = [encode(self.tokenizer, p.prompt, p.chosen, self.max_length) for p in items]
            rows += [encode(self.tokenizer, p.prompt, p.rejected, self.max_length) for p in items]
            return {"index": indices, **pad_rows(rows, pad)}
        rows = [encode(self.tokenizer, e.prompt, e.response, self.max_length) for e in items]
        return {"index": indices, "weight": torch.tensor([e.weight for e in items], dtype=torch.float32),
                "reward": torch.tensor([e.reward for e in items], dtype=torch.float32), **pad_rows(rows, pad)}

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(_ListDataset(self.items), batch_size=self.batch_size, shuffle=True,
                          generator=generator, collate_fn=self.collate)
