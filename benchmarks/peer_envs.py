"""Each peer server in its own virtual environment under ``benchmarks/.peers/<peer>/venv``.

The environments are made on first use and reused after (a stamp records what was installed), so
``make bench-peers`` works from a fresh clone and costs nothing the second time. torch is installed
first and pinned wherever a peer needs it: the CPU build lies on this machine's disk, and an
unpinned torch would pull a multi-GB CUDA build. Everything here is git-ignored.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / ".peers"
TORCH = "torch==2.13.0"
# One engine for every contender: the version leanserve runs.
ORT = "onnxruntime==1.32.0"


@dataclass(frozen=True)
class PeerEnv:
    name: str
    packages: tuple[str, ...]
    torch: bool = False  # install the pinned CPU torch first, and keep it pinned


ENVS: dict[str, PeerEnv] = {
    e.name: e
    for e in (
        PeerEnv("fastapi", ("fastapi", "uvicorn[standard]", "orjson", ORT, "numpy")),
        # tokenizers: the text peer (benchmarks/peers/litserve_text_app.py) tokenizes in the server.
        PeerEnv("litserve", ("litserve", ORT, "numpy", "uvloop", "tokenizers")),
        PeerEnv("bentoml", ("bentoml", ORT, "numpy")),
        PeerEnv("rayserve", ("ray[serve]", ORT, "numpy")),
        # MLServer 1.7.1 crashes under uvloop 0.23 at start-up; 0.21 works.
        PeerEnv("mlserver", ("mlserver==1.7.1", "uvloop==0.21.0", ORT, "numpy")),
        PeerEnv("pytriton", ("nvidia-pytriton", ORT, "numpy")),
        # TorchServe imports torch and yaml without declaring them.
        PeerEnv("torchserve", ("torchserve", "torch-model-archiver", "pyyaml", ORT, "numpy"), torch=True),
    )
}


def venv_python(name: str) -> Path:
    return PEERS_DIR / name / "venv" / "bin" / "python"


def _stamp(env: PeerEnv) -> str:
    return hashlib.sha256(json.dumps([env.packages, env.torch]).encode()).hexdigest()[:16]


def ensure(env: PeerEnv, log: Path | None = None) -> Path:
    """The peer's interpreter, its environment made first when missing or stale; raises on failure."""
    root = PEERS_DIR / env.name
    stamp = root / "venv" / ".installed"
    python = venv_python(env.name)
    if stamp.is_file() and stamp.read_text() == _stamp(env) and python.exists():
        return python
    root.mkdir(parents=True, exist_ok=True)
    log = log or root / "install.log"
    base = getattr(sys, "_base_executable", sys.executable)
    with log.open("w") as out:

        def run(*args: str) -> None:
            out.write(f"$ {' '.join(args)}\n")
            out.flush()
            done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                tail = log.read_text().splitlines()[-15:]
                raise RuntimeError(f"{' '.join(args[:6])} failed:\n" + "\n".join(tail))

        run(base, "-m", "venv", "--clear", str(root / "venv"))
        pip = (str(python), "-m", "pip", "install", "-q")
        extra: tuple[str, ...] = ()
        if env.torch:
            run(*pip, TORCH)
            constraints = root / "constraints.txt"
            constraints.write_text(TORCH + "\n")
            extra = ("-c", str(constraints))
        run(*pip, *extra, *env.packages)
    stamp.write_text(_stamp(env))
    return python


if __name__ == "__main__":
    names = sys.argv[1:] or list(ENVS)
    for n in names:
        try:
            print(n, ensure(ENVS[n]), flush=True)
        except Exception as e:
            print(n, "FAILED", e, flush=True)
