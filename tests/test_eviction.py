"""The eviction policy alone: which versions make room, in which order, and when none can."""

from __future__ import annotations

from leanserve.eviction import Resident, choose_victims

MIB = 1 << 20


def test_nothing_to_evict_when_it_fits() -> None:
    residents = [Resident("a", 10 * MIB, 1.0, 0)]
    assert choose_victims(residents, 10 * MIB, 10 * MIB, 20 * MIB) == []


def test_least_recently_used_go_first_and_only_as_many_as_needed() -> None:
    residents = [
        Resident("new", 10 * MIB, 3.0, 0),
        Resident("old", 10 * MIB, 1.0, 0),
        Resident("mid", 10 * MIB, 2.0, 0),
    ]
    assert choose_victims(residents, 10 * MIB, 30 * MIB, 30 * MIB) == ["old"]
    assert choose_victims(residents, 20 * MIB, 30 * MIB, 30 * MIB) == ["old", "mid"]


def test_acquired_and_pinned_versions_are_never_chosen() -> None:
    residents = [
        Resident("busy", 10 * MIB, 1.0, acquired=2),
        Resident("always", 10 * MIB, 0.5, 0, pinned=True),
        Resident("idle", 10 * MIB, 9.0, 0),
    ]
    assert choose_victims(residents, 10 * MIB, 30 * MIB, 30 * MIB) == ["idle"]


def test_none_when_even_every_candidate_would_not_make_room() -> None:
    residents = [Resident("busy", 10 * MIB, 1.0, acquired=1), Resident("idle", 10 * MIB, 2.0, 0)]
    assert choose_victims(residents, 25 * MIB, 20 * MIB, 30 * MIB) is None
