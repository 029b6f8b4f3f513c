"""Shared test setup: offline hub, bounded threads, and a composed-config helper."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from dsc.paths import config_dir  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture
def make_config():
    return compose_config
