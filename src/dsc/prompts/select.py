"""Choosing the prompts a run uses, and storing them beside its samples.

``select`` is prefix-stable: the first n prompts of a split are the first n of any larger selection
with the same seed, so growing a run's prompt budget only adds prompts. ``save_prompts`` writes the
exact set a run used (JSONL: id, text, split, meta); ``load_prompts`` reads it back unchanged.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

from dsc.errors import DscError
from dsc.jsonl import read_objects
from dsc.prompts.splits import SPLITS
from dsc.records import Prompt


def select(prompts: Sequence[Prompt], split: str, limit: int | None = None, seed: int = 0) -> list[Prompt]:
    """The prompts of ``split`` in a seeded order (independent of the input order), first ``limit``."""
    if split not in SPLITS:
        raise DscError(f"split={split!r} is not a prompt split; use one of {', '.join(SPLITS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise DscError(f"limit={limit!r} must be a non-negative integer or null (all prompts of the split)")
    chosen = sorted((p for p in prompts if p.split == split), key=lambda p: p.id)
    if not chosen:
        have = sorted({p.split for p in prompts})
        raise DscError(
            f"split={split!r} has no prompts (the set has {len(prompts)} prompts in splits {have}); "
            "choose another split or give the source fractions that leave this split non-empty"
        )
    random.Random(seed).shuffle(chosen)
    return chosen if limit is None else chosen[:limit]


def save_prompts(prompts: Iterable[Prompt], path: str | os.PathLike[str]) -> Path:
    """Write prompts as JSONL (one ``{"id", "text", "split", "meta"}`` object a line), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for p in prompts:
            row = {"id": p.id, "text": p.text, "split": p.split, "meta": p.meta}
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def load_prompts(path: str | os.PathLike[str]) -> list[Prompt]:
    """Read a file written by ``save_prompts``."""
    path = Path(path)
    if not path.is_file():
        raise DscError(f"prompts file {path} does not exist; it is written by save_prompts beside a run's samples")
    prompts = []
    for lineno, row in read_objects(path, f"prompts file {path}", fix="re-save it with save_prompts"):
        try:
            prompts.append(Prompt(id=row["id"], text=row["text"], split=row["split"], meta=row.get("meta", {})))
        except KeyError as e:
            raise DscError(f"prompts file {path}: line {lineno} lacks {e}; re-save it with save_prompts") from None
    return prompts
