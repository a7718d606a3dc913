"""The server's Dockerfile: CPU (python:3.11-slim) or CUDA (NVIDIA's CUDA + cuDNN runtime).

The image runs as a non-root user, holds the repository at /models (copied in, or mounted over
by the pod), and starts ``leanserve serve`` with the budget, the workers and the admin token
from the environment (LEANSERVE_MEMORY_BUDGET, LEANSERVE_WORKERS, LEANSERVE_ADMIN_TOKEN), so one
image serves under any budget. What pip installs is pinned in ``requirements.txt`` of the build
context; leanserve comes from ``wheels/`` when a wheel is there (``pip wheel --no-deps -w
deploy/wheels .`` in a checkout), else from the package index.
"""

from __future__ import annotations

import json
from typing import Final

from .options import MODELS_PATH, PORT, STATE_PATH

CPU_BASE: Final = "python:3.11-slim-bookworm"
CUDA_BASE: Final = "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04"
UID: Final = 10001
ONNXRUNTIME_GPU: Final = "1.22.0"


def entrypoint(models: str = MODELS_PATH, port: int = PORT, state: str = STATE_PATH) -> list[str]:
    """The command the image starts (also what the tests run outside a container)."""
    return ["leanserve", "serve", models, "--host", "0.0.0.0", "--port", str(port), "--state-dir", state]


def requirements(cuda: bool = False, extras: str = "") -> str:
    """What the image installs, pinned (requirements.txt, or requirements-cuda.txt)."""
    from .. import __version__

    lines = [f"leanserve[{extras}]=={__version__}" if extras else f"leanserve=={__version__}"]
    if cuda:  # ONNX Runtime's CUDA build, with NVIDIA's CUDA and cuDNN libraries from pip
        lines.append(f"onnxruntime-gpu[cuda,cudnn]=={ONNXRUNTIME_GPU}")
    return "\n".join(lines) + "\n"


def dockerfile(cuda: bool = False, bake: bool = True) -> str:
    """The Dockerfile text. ``bake``: copy ``models/`` of the build context into the image."""
    needs = "requirements-cuda.txt" if cuda else "requirements.txt"
    lines = ["# syntax=docker/dockerfile:1", "# Written by `leanserve deploy`; build with: docker build -t IMAGE ."]
    if cuda:
        lines += [
            f"FROM {CUDA_BASE}",
            "# The CUDA image's Ubuntu moves its point releases: its Python packages are not pinned.",
            "# hadolint ignore=DL3008",
            "RUN apt-get update \\",
            " && apt-get install -y --no-install-recommends python3 python3-venv \\",
            " && rm -rf /var/lib/apt/lists/*",
            "RUN python3 -m venv /opt/leanserve",
            'ENV PATH="/opt/leanserve/bin:${PATH}"',
        ]
    else:
        lines += [f"FROM {CPU_BASE}"]
    lines += [
        "ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        f"COPY {needs} /tmp/requirements.txt",
        "COPY wheels/ /tmp/wheels/",
        "RUN pip install --no-cache-dir --find-links /tmp/wheels --requirement /tmp/requirements.txt \\",
        " && rm -rf /tmp/wheels /tmp/requirements.txt",
    ]
    if cuda:
        # leanserve requires onnxruntime, whose CPU build would shadow the CUDA one (both are the
        # module onnxruntime): keep only the CUDA build.
        lines += [
            "RUN pip uninstall -y onnxruntime \\",
            f' && pip install --no-cache-dir --no-deps --force-reinstall "onnxruntime-gpu=={ONNXRUNTIME_GPU}"',
        ]
    lines += [
        f"RUN groupadd --system --gid {UID} leanserve \\",
        f" && useradd --system --uid {UID} --gid leanserve --no-create-home leanserve \\",
        f" && mkdir -p {MODELS_PATH} {STATE_PATH} && chown leanserve:leanserve {STATE_PATH}",
    ]
    if bake:
        lines += [f"COPY --chown={UID}:{UID} models/ {MODELS_PATH}/"]
    lines += [
        f"USER {UID}",
        f"EXPOSE {PORT}",
        "# The budget, the workers and the admin token come from the environment (the pod sets them).",
        f"ENTRYPOINT {json.dumps(entrypoint())}",
    ]
    return "\n".join(lines) + "\n"
