"""Fixtures shared across the suite: one demo repository, built once per test session into a temporary folder."""

from __future__ import annotations

import os

# Before anything imports transformers: it reads these once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path

import pytest

from leanserve.demo import build_demo_repository


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_repository(tmp_path_factory.mktemp("demo") / "repo")
