"""Load a repository here, as the server would, to measure what a pod will need."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..registry import ModelRegistry, RegistryOptions
from .plan import Measured


def measure_repository(repository: Path) -> Measured:
    """Every model loaded and warmed up once (in this process), its size measured as the server does."""
    return asyncio.run(_measure(Path(repository)))


async def _measure(repository: Path) -> Measured:
    registry = ModelRegistry(repository, RegistryOptions(default_load="always"))
    # Load every version, on-demand ones too: a pod must have room for any of them.
    await registry.load_all()
    try:
        for model in registry.snapshot():
            if any(not v.resident for v in model.versions):
                await registry.load(model.name)
        sizes: dict[str, int] = {}
        slowest = 0.0
        for model in registry.snapshot():
            sizes[model.name] = sum(v.memory_bytes for v in model.versions)
            slowest = max([slowest, *(v.stats.load_seconds for v in model.versions)])
        return Measured(registry.baseline_bytes, sizes, slowest)
    finally:
        await registry.close()
