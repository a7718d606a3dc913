"""Which resident model versions to unload so that another fits the memory budget: a pure policy.

The registry (:mod:`leanserve.registry`) owns the mechanism (loads, unloads, waiting for
requests to finish); this module only decides, so it is tested without engines or sockets.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Resident:
    """A loaded version as the policy sees it."""

    key: Hashable
    bytes: int
    last_used: float  # monotonic seconds of its last acquire
    acquired: int  # requests holding it: never unloaded while > 0
    pinned: bool = False  # load = "always": never evicted


def choose_victims(residents: Sequence[Resident], need: int, used: int, budget: int) -> list[Hashable] | None:
    """The least recently used unpinned, unacquired versions to unload so that ``need`` more bytes fit.

    ``used`` is what the budget already holds. Returns the keys in unload order ([] when it
    already fits), or None when even unloading every candidate would not make room, so the
    caller can wait for requests to finish, or refuse.
    """
    if used + need <= budget:
        return []
    victims: list[Hashable] = []
    freed = 0
    for r in sorted(residents, key=lambda r: r.last_used):
        if r.pinned or r.acquired > 0:
            continue
        victims.append(r.key)
        freed += r.bytes
        if used - freed + need <= budget:
            return victims
    return None


__all__ = ["Resident", "choose_victims"]
