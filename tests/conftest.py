"""Shared fixtures: a deterministic fake encoder and small catalogs, so unit tests are fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from consumer.encoder import HashingEncoder

pytest_plugins = ["tests.broker_fixtures"]

HYPD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hypd"


@pytest.fixture
def fake_encoder() -> HashingEncoder:
    return HashingEncoder(dim=64)


@pytest.fixture(scope="session")
def hypd_dir() -> Path:
    if not (HYPD_DIR / "product_list.csv").exists():
        pytest.skip(f"shared HYPD data not found at {HYPD_DIR}")
    return HYPD_DIR
