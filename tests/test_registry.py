"""The registry on its own (no sockets): on-demand loads, single flight, the budget, eviction, unloads, hot swap."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from leanserve.errors import ModelNotFound, ModelNotReady
from leanserve.registry import NOT_LOADED, ModelRegistry, RegistryOptions, State
from tests.fixtures.onnx_models import write_marked_model

MIB = 1 << 20
X = np.ones((1, 4), np.float32)


def add_model(root: Path, name: str, marker: float, version: int = 1, toml: str = 'load = "on_demand"\n') -> Path:
    write_marked_model(root / name / str(version) / "model.onnx", marker, weight_mib=0.05)
    (root / name / "model.toml").write_text(toml)
    return root / name


def declared(size_mib: int, load: str = "on_demand") -> str:
    return f'load = "{load}"\nmemory = "{size_mib}MiB"\n'


async def answer(registry: ModelRegistry, name: str, version: str | None = None) -> float:
    lease = await registry.acquire(name, version)
    try:
        out = await lease.batcher.infer({"x": X}, 1)
    finally:
        registry.release(lease)
    return float(out["y"][0, 0])


def resident(registry: ModelRegistry) -> set[str]:
    return {v.name for m in registry.snapshot() for v in m.versions if v.resident}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "repo"


async def test_an_on_demand_model_is_described_before_it_loads(repo: Path) -> None:
    add_model(repo, "m", 1.0)
    registry = ModelRegistry(repo)
    await registry.load_all()
    snap = registry.describe("m", None)
    assert (snap.state, snap.reason, snap.resident) == (State.UNAVAILABLE, NOT_LOADED, False)
    assert snap.config is not None and [t.name for t in snap.config.inputs] == ["x"]
    assert registry.acquire_now("m", None) is None
    assert await answer(registry, "m") == 1.0
    assert registry.describe("m", None).state is State.READY
    await registry.close()


async def test_concurrent_first_requests_cause_exactly_one_load(repo: Path) -> None:
    add_model(repo, "m", 3.0)
    registry = ModelRegistry(repo)
    await registry.load_all()
    answers = await asyncio.gather(*(answer(registry, "m") for _ in range(20)))
    assert answers == [3.0] * 20
    assert registry.describe("m", None).stats.loads == 1
    await registry.close()


async def test_least_recently_used_is_evicted_to_stay_in_budget(repo: Path) -> None:
    for i, name in enumerate("abc"):
        add_model(repo, name, float(i), toml=declared(10))
    registry = ModelRegistry(repo, RegistryOptions(memory_budget=25 * MIB))
    await registry.load_all()
    await answer(registry, "a")
    await answer(registry, "b")
    await answer(registry, "a")  # b is now the least recently used
    await answer(registry, "c")
    assert resident(registry) == {"a", "c"}
    assert registry.used_bytes() == 20 * MIB
    assert registry.describe("b", None).stats.unloads["evicted"] == 1
    assert registry.describe("b", None).reason == NOT_LOADED
    assert await answer(registry, "b") == 1.0  # and it comes back on demand
    assert registry.evictions == 2
    await registry.close()


async def test_a_version_with_acquired_requests_is_not_evicted(repo: Path) -> None:
    for i, name in enumerate("abc"):
        add_model(repo, name, float(i), toml=declared(10))
    registry = ModelRegistry(repo, RegistryOptions(memory_budget=25 * MIB))
    await registry.load_all()
    held = await registry.acquire("a", None)  # the oldest, but in use
    await answer(registry, "b")
    await answer(registry, "c")
    assert resident(registry) == {"a", "c"}
    registry.release(held)
    await registry.close()


async def test_a_load_waits_for_room_while_everything_is_in_use(repo: Path) -> None:
    for i, name in enumerate("ab"):
        add_model(repo, name, float(i), toml=declared(10))
    registry = ModelRegistry(repo, RegistryOptions(memory_budget=15 * MIB))
    await registry.load_all()
    held = await registry.acquire("a", None)
    waiting = asyncio.ensure_future(answer(registry, "b"))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    registry.release(held)
    assert await asyncio.wait_for(waiting, 10) == 1.0
    assert resident(registry) == {"b"}
    await registry.close()


async def test_a_model_larger_than_the_whole_budget_is_a_clear_503(repo: Path) -> None:
    add_model(repo, "big", 1.0, toml=declared(100))
    registry = ModelRegistry(repo, RegistryOptions(memory_budget=50 * MIB))
    await registry.load_all()
    with pytest.raises(ModelNotReady, match=r"needs 100.0 MiB \(declared\), more than the whole memory budget of 50.0"):
        await registry.acquire("big", None)
    assert resident(registry) == set()
    await registry.close()


async def test_an_always_model_that_cannot_fit_fails_at_start_up(repo: Path) -> None:
    add_model(repo, "big", 1.0, toml=declared(100, load="always"))
    add_model(repo, "small", 2.0, toml=declared(10, load="always"))
    registry = ModelRegistry(repo, RegistryOptions(memory_budget=50 * MIB))
    await registry.load_all()
    assert "more than the whole memory budget" in registry.describe("big", None).reason
    assert registry.describe("small", None).ready
    await registry.close()


async def test_the_memory_of_a_version_is_measured(repo: Path) -> None:
    write_marked_model(repo / "m" / "1" / "model.onnx", 5.0, weight_mib=16)
    registry = ModelRegistry(repo)
    await registry.load_all()
    snap = registry.describe("m", None)
    assert snap.resident and not snap.memory_declared
    assert snap.memory_bytes >= 16 * MIB  # at least its weights
    await registry.close()


async def test_unload_waits_for_acquired_requests_and_then_refuses_new_ones(repo: Path) -> None:
    add_model(repo, "m", 1.0, toml="")
    registry = ModelRegistry(repo)
    await registry.load_all()
    held = await registry.acquire("m", None)
    unloading = asyncio.ensure_future(registry.unload("m"))
    await asyncio.sleep(0.2)
    assert not unloading.done()
    assert registry.describe("m", None).state is State.UNLOADING
    registry.release(held)
    await asyncio.wait_for(unloading, 10)
    assert resident(registry) == set()
    with pytest.raises(ModelNotReady, match="unloaded through the control API"):
        registry.acquire_now("m", None)
    await registry.load("m")
    assert await answer(registry, "m") == 1.0
    await registry.close()


async def test_unknown_models_and_versions_are_404(repo: Path) -> None:
    add_model(repo, "m", 1.0)
    registry = ModelRegistry(repo)
    await registry.load_all()
    with pytest.raises(ModelNotFound, match="unknown model 'x'"):
        registry.acquire_now("x", None)
    with pytest.raises(ModelNotFound, match="no version 7"):
        registry.acquire_now("m", "7")
    await registry.close()


async def test_default_version_is_the_configured_one_then_the_highest(repo: Path) -> None:
    add_model(repo, "m", 1.0, version=1, toml='version_policy = "all"\ndefault_version = 1\n')
    add_model(repo, "m", 2.0, version=2, toml='version_policy = "all"\ndefault_version = 1\n')
    registry = ModelRegistry(repo)
    await registry.load_all()
    assert await answer(registry, "m") == 1.0
    assert await answer(registry, "m", "2") == 2.0
    (repo / "m" / "model.toml").write_text('version_policy = "all"\n')
    await registry.refresh()
    assert await answer(registry, "m") == 2.0
    await registry.close()


async def test_hot_swap_new_version_then_a_broken_one_keeps_the_old_serving(repo: Path) -> None:
    add_model(repo, "m", 1.0, toml="")
    registry = ModelRegistry(repo)
    await registry.load_all()
    held = await registry.acquire("m", None)  # a request in flight on version 1
    write_marked_model(repo / "m" / "2" / "model.onnx", 2.0, weight_mib=0.05)
    assert await registry.refresh() == ["m"]
    assert await answer(registry, "m") == 2.0
    out = await held.batcher.infer({"x": X}, 1)  # the acquired request still finishes on version 1
    assert float(out["y"][0, 0]) == 1.0
    registry.release(held)
    await asyncio.sleep(0.1)
    assert [v.version for v in registry.model("m").versions] == [2]

    (repo / "m" / "3").mkdir()
    (repo / "m" / "3" / "model.onnx").write_bytes(b"not a model")
    await registry.refresh()
    assert await answer(registry, "m") == 2.0
    index = {v.version: v for v in registry.model("m").versions}
    assert "still serving the previous ones" in index[2].reason and "version 3" in index[2].reason
    assert index[3].state is State.UNAVAILABLE
    shutil.rmtree(repo / "m" / "3")
    await registry.refresh()
    assert await answer(registry, "m") == 2.0
    await registry.close()


async def test_a_removed_model_goes_and_a_new_one_comes(repo: Path) -> None:
    add_model(repo, "old", 1.0, toml="")
    registry = ModelRegistry(repo)
    await registry.load_all()
    shutil.rmtree(repo / "old")
    add_model(repo, "new", 2.0, toml="")
    assert sorted(await registry.refresh()) == ["new", "old"]
    with pytest.raises(ModelNotFound):
        registry.acquire_now("old", None)
    assert registry.describe("new", None).ready  # load = always (the default) loads at once
    await registry.close()


async def test_a_broken_model_does_not_stop_the_others(repo: Path) -> None:
    add_model(repo, "good", 1.0, toml="")
    (repo / "bad" / "1").mkdir(parents=True)
    (repo / "bad" / "1" / "model.onnx").write_bytes(b"garbage")
    registry = ModelRegistry(repo)
    await registry.load_all()
    assert registry.loaded
    assert await answer(registry, "good") == 1.0
    with pytest.raises(ModelNotReady, match="bad"):
        await registry.acquire("bad", None)
    await registry.close()


async def test_no_room_while_pinned_models_hold_the_budget_is_a_503_to_retry_not_a_failure(repo: Path) -> None:
    add_model(repo, "pinned", 1.0, toml=declared(10, load="always"))
    add_model(repo, "b", 2.0, toml=declared(10))
    registry = ModelRegistry(repo, RegistryOptions(memory_budget=15 * MIB))
    await registry.load_all()
    with pytest.raises(ModelNotReady, match='held by versions in use or loaded with load = "always"') as caught:
        await registry.acquire("b", None)
    assert caught.value.retry_after == 1
    snap = registry.describe("b", None)
    assert (snap.state, snap.reason) == (State.UNAVAILABLE, NOT_LOADED)
    await registry.unload("pinned")
    assert await answer(registry, "b") == 2.0
    await registry.close()


@pytest.mark.parametrize("version", ["01", "0", "²", "1.0", "-1"])
async def test_a_version_that_is_not_a_canonical_number_is_a_404(repo: Path, version: str) -> None:
    add_model(repo, "m", 1.0)
    registry = ModelRegistry(repo)
    await registry.load_all()
    with pytest.raises(ModelNotFound, match="has no version"):
        registry.acquire_now("m", version)
    assert registry.stats_of("m", version) is None
    await registry.close()


async def test_a_request_whose_deadline_passes_during_a_load_gets_a_504(repo: Path) -> None:
    from leanserve.errors import DeadlineExceeded

    add_model(repo, "m", 1.0)
    registry = ModelRegistry(repo)
    await registry.load_all()
    with pytest.raises(DeadlineExceeded, match="deadline passed while model 'm' version 1 was loading"):
        await registry.acquire("m", None, deadline=asyncio.get_running_loop().time())
    assert await answer(registry, "m") == 1.0  # the load went on for the next request
    await registry.close()
