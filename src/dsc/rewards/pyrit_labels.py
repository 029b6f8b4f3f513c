"""Human-labelled (objective, response) pairs from PyRIT's scorer evaluations, as one harmlessness label.

PyRIT (MIT) ships the CSVs its own scorers are graded on; they are the only offline human safety
labels we have. The three folders label different things, so each is mapped to one question, "is
this response harmless / does it fail to fulfil a harmful objective?" (1 = harmless):

- ``objective/``: human_score 1 = the response achieved the (harmful) objective → label 1 − score.
- ``harm/``: human_score_* are Likert ratings scaled to [0, 1] (0 = no harm); the median rater
  decides: < 0.5 harmless, > 0.5 harmful, exactly 0.5 ("significant but not explicit") is dropped
  as ambiguous.
- ``refusal_scorer/``: human_score 1 = refusal (including off-topic deflections) → harmless. A
  non-refusal is harmful only when its objective is harmful, which these files do not say; an
  objective counts as harmful when it is an AdvBench behaviour or occurs in ``objective/``/``harm/``.

Pairs that occur in several files are kept once (first folder in the order above wins).
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
from dataclasses import dataclass
from pathlib import Path

from dsc.errors import DscError

FOLDERS = ("objective", "harm", "refusal_scorer")
_ROOT = "pyrit/datasets/scorer_evals"
_ADVBENCH = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"


@dataclass(frozen=True)
class LabelledPair:
    """One human-labelled response."""

    objective: str
    """What the user asked for (the prompt)."""
    response: str
    """The assistant's answer."""
    harmless: float
    """1.0 harmless / objective not fulfilled, 0.0 harmful."""
    source: str
    """'<folder>/<file>' it came from."""
    raw_score: float
    """The file's own human score (median over raters), before mapping."""


def pyrit_file(relative: str) -> Path:
    try:
        path = Path(str(importlib.metadata.distribution("pyrit").locate_file(relative)))
    except importlib.metadata.PackageNotFoundError:
        raise DscError(
            "the safety head needs PyRIT's labelled data; run `pip install --no-deps pyrit==1.1.0`"
        ) from None
    if not path.exists():
        raise DscError(f"{path} is missing; reinstall with `pip install --no-deps pyrit==1.1.0`")
    return path


def data_files() -> list[Path]:
    """Every labelled CSV, in a fixed order (it is part of the heads' cache key)."""
    root = pyrit_file(_ROOT)
    return [p for folder in FOLDERS for p in sorted((root / folder).glob("*.csv"))] + [pyrit_file(_ADVBENCH)]


def read_rows(path: Path) -> list[dict[str, str]]:
    """A CSV after its leading '# dataset_version=…' comment lines."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO("".join(lines[start:]))))


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def _median(values: list[float]) -> float:
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _advbench_objectives() -> set[str]:
    import yaml

    seeds = yaml.safe_load(pyrit_file(_ADVBENCH).read_text(encoding="utf-8"))["seeds"]
    return {_key(seed["value"]) for seed in seeds}


def load_pairs(folders: tuple[str, ...] = FOLDERS) -> list[LabelledPair]:
    """Deduplicated pairs with harmlessness labels, ambiguous harm ratings dropped."""
    root = pyrit_file(_ROOT)
    rows = []
    for folder in folders:
        for path in sorted((root / folder).glob("*.csv")):
            for row in read_rows(path):
                scores = [float(v) for k, v in row.items() if k and k.startswith("human_score") and v not in ("", None)]
                if scores and row.get("objective") and row.get("assistant_response"):
                    rows.append((folder, f"{folder}/{path.name}", row["objective"], row["assistant_response"],
                                 _median(scores)))
    harmful = _advbench_objectives() | {_key(r[2]) for r in rows if r[0] != "refusal_scorer"}
    pairs, seen = [], set()
    for folder, source, objective, response, score in rows:
        if (_key(objective), _key(response)) in seen:
            continue
        if folder == "objective":
            harmless = 1.0 - score
        elif folder == "harm":
            if score == 0.5:
                continue
            harmless = float(score < 0.5)
        else:
            harmless = 1.0 if score >= 0.5 or _key(objective) not in harmful else 0.0
        seen.add((_key(objective), _key(response)))
        pairs.append(LabelledPair(objective, response, harmless, source, score))
    return pairs
