"""Linear heads trained once on bundled labelled data and cached by content.

A head is a handful of numpy arrays (weights, bias) plus a JSON training report (held-out metric,
data size, seconds). The cache key hashes the training data, the encoder name and the recipe, so a
new data release or a changed hyperparameter retrains instead of silently reusing a stale head, and
nothing is pickled (a cached file can never execute code). A file lock lets parallel processes
(DDP ranks, sweep jobs) share one training run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from filelock import FileLock

from dsc.paths import cache_dir

Trainer = Callable[[], tuple[dict[str, np.ndarray], dict]]
"""Returns (arrays to save, JSON-serialisable report)."""


def content_key(parts: Iterable[bytes | str]) -> str:
    """A short hash of everything a head depends on."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:16]


def head_paths(name: str, key: str) -> tuple[Path, Path]:
    folder = cache_dir() / "rewards"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{key}.npz", folder / f"{name}-{key}.json"


def cached_head(name: str, key: str, train: Trainer) -> tuple[dict[str, np.ndarray], dict]:
    """Load the head for ``key`` or train and store it; the report gains ``train_seconds`` and ``path``."""
    arrays_path, report_path = head_paths(name, key)
    with FileLock(str(arrays_path) + ".lock"):
        if not (arrays_path.exists() and report_path.exists()):
            start = time.perf_counter()
            arrays, report = train()
            report = {**report, "train_seconds": round(time.perf_counter() - start, 1), "key": key}
            _atomic_write(arrays_path, lambda f: np.savez(f, **arrays))
            _atomic_write(report_path, lambda f: f.write(json.dumps(report, indent=2).encode()))
        with np.load(arrays_path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
        report = json.loads(report_path.read_text())
    report["path"] = str(arrays_path)
    return arrays, report


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


class HeadReward:
    """Base of the rewards read off a small head trained on MiniLM embeddings of real labelled data.

    The head trains on first use (not at construction, so configs instantiate cheaply), once per
    content key, and is cached with its held-out report; ``report`` exposes that report.
    """

    def __init__(self, folds: int, seed: int, success_threshold: float, batch_size: int, name: str):
        self.folds = int(folds)
        self.seed = int(seed)
        self.success_threshold = float(success_threshold)
        self.batch_size = int(batch_size)
        self.name = name
        self._head: tuple[np.ndarray, float] | None = None
        self._report: dict | None = None

    @property
    def report(self) -> dict:
        """The training report (held-out metrics, data size, seconds); trains on first access."""
        self._load()
        return self._report

    def success(self, rewards):
        return rewards > self.success_threshold

    cache_name: str
    """Folder of this head's cache entries (fixed per class; ``name`` may be renamed by config)."""
    weight_dtype: type = np.float64

    def _load(self) -> tuple[np.ndarray, float]:
        """(weights, bias), trained or read from the cache on first use."""
        if self._head is None:
            key, train = self._recipe()
            arrays, self._report = cached_head(self.cache_name, key, train)
            self._head = (arrays["weights"].astype(self.weight_dtype), float(arrays["bias"]))
        return self._head

    def _recipe(self) -> tuple[str, Trainer]:
        """(content key of data + embedding model + training recipe, function that trains the head)."""
        raise NotImplementedError
