"""Peer servers as processes: start one and wait for its first answer, its memory, stop it and its children.

Ray Serve, TorchServe and Triton each start several processes; everything here works on the whole
tree below the process started, by id.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol


class Startable(Protocol):
    command: list[str]
    path: str
    body: bytes
    env: dict[str, str]


def post(url: str, body: bytes, timeout: float = 10.0) -> bytes:
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return bytes(r.read())


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    tree, i = [pid], 0
    while i < len(tree):
        tree += children.get(tree[i], [])
        i += 1
    return tree


def resident_mb(pid: int) -> float:
    """Resident memory summed over ``pid`` and its descendants (Ray, TorchServe and Triton run several)."""
    total = 0
    for p in descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server and every process it started, by id (collected before any exits)."""
    tree = descendants(proc.pid)
    for p in tree:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=15)
    for p in tree + descendants(proc.pid):
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    proc.wait()


def start(s: Startable, port: int, log: Path, timeout: float = 240.0) -> tuple[subprocess.Popen[bytes], float, bytes]:
    """Start a server; returns it, its cold start (process start to first answer, s) and that answer."""
    url = f"http://127.0.0.1:{port}{s.path}"
    t0 = time.perf_counter()
    with log.open("wb") as f:
        proc = subprocess.Popen(s.command, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **s.env})
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}: " + " | ".join(log.read_text().splitlines()[-6:]))
        try:
            answer = post(url, s.body, timeout=5.0)
            return proc, time.perf_counter() - t0, answer
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"no answer within {timeout:.0f} s: " + " | ".join(log.read_text().splitlines()[-6:]))
