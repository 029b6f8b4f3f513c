"""AdvBench (Zou et al. 2023): 520 harmful-behaviour requests, the prompts of the safety task.

Read from the ``pyrit==1.1.0`` wheel (MIT), which ships them as YAML with harm-category labels; no
network is needed. Ids follow the file order (``advbench-0000`` … ``advbench-0519``); each prompt is
its own group for the split.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

import yaml

from dsc.errors import DscError
from dsc.prompts.base import Item, with_splits
from dsc.prompts.splits import DEFAULT_FRACTIONS, check_fractions
from dsc.records import Prompt

PYRIT_PIN = "pyrit==1.1.0"
ADVBENCH_FILE = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"


def advbench_path() -> Path:
    """Where the installed pyrit keeps AdvBench."""
    fix = f"install it with `pip install --no-deps {PYRIT_PIN}` (dsc only reads its data files)"
    try:
        dist = importlib.metadata.distribution("pyrit")
    except importlib.metadata.PackageNotFoundError:
        raise DscError(f"task.prompts=advbench needs the AdvBench prompts shipped in pyrit, which is not installed; {fix}") from None
    path = Path(str(dist.locate_file(ADVBENCH_FILE)))
    if not path.is_file():
        raise DscError(
            f"task.prompts=advbench: the installed pyrit {dist.version} has no {ADVBENCH_FILE}; "
            f"install the tested version with `pip install --no-deps {PYRIT_PIN}`"
        )
    return path


class AdvBenchPrompts:
    """The 520 AdvBench prompts, split by seed; meta holds pyrit's harm categories."""

    def __init__(self, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS):
        self.seed = int(seed)
        self.fractions = check_fractions(fractions)

    def load(self) -> list[Prompt]:
        path = advbench_path()
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with path.open(encoding="utf-8") as f:
            seeds = yaml.load(f, Loader=loader)["seeds"]
        items = []
        for i, seed in enumerate(seeds):
            text = " ".join(str(seed["value"]).split())
            meta = {"source": f"{PYRIT_PIN}:{ADVBENCH_FILE}", "index": i,
                    "harm_categories": list(seed.get("harm_categories") or [])}
            items.append(Item(id=f"advbench-{i:04d}", text=text, group=text, meta=meta))
        return with_splits(items, self.seed, self.fractions)
