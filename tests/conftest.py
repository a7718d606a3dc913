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
    # LEANSERVE_TEST_DEMO names a repository built before (leanserve demo --no-serve --repo DIR): reused,
    # and completed if a model is missing, so a developer's rerun skips minutes of training.
    prebuilt = os.environ.get("LEANSERVE_TEST_DEMO")
    if prebuilt:
        return build_demo_repository(Path(prebuilt))
    return build_demo_repository(tmp_path_factory.mktemp("demo") / "repo")
