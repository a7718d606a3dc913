"""Run ``leanserve optimize`` on the demo models, so the demo repository holds real variants and reports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# How each demo model is judged: digits against its labels, minilm by cosine to the original,
# with a floor on the worst sentence and figures per language (Korean is the worst case for int8),
# shapes-seg by IoU against the true masks.
RECIPES: dict[str, dict[str, object]] = {
    "digits": {"labels": "labels", "budget": "1%"},
    "minilm": {"metric": "cosine", "budget": 0.99, "worst": 0.97, "groups": "language", "objective": "throughput"},
    # The masks' intersection over union with the true masks, at most one point below the original's.
    "shapes-seg": {"labels": "mask", "metric": "iou", "budget": "1%"},
}


def optimize_demo_repository(
    repo: Path,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
    quick: bool = False,
    models: Sequence[str] = tuple(RECIPES),
    variants: Sequence[str] | None = None,
) -> list[str]:
    """Optimize each demo model that has no report yet; returns one summary line per model."""
    from ..optimization import optimize

    say = progress or (lambda _m: None)
    lines = []
    for name in models:
        recipe = RECIPES[name]
        model_dir = repo / name
        if (model_dir / "report.json").exists() and not force:
            say(f"{name}: already optimized (report.json present)")
            continue
        with np.load(model_dir / "eval.npz") as archive:
            data = {k: archive[k] for k in archive.files}
        say(f"optimizing {name} ...")
        result = optimize(
            model_dir / "1" / "model.onnx",
            data=data,
            repo=repo,
            name=name,
            quick=quick,
            variants=variants,
            progress=_prefixed(say, name),
            **recipe,  # type: ignore[arg-type]
        )
        lines.append(f"{name}: {result.message}")
        say(lines[-1])
    return lines


def _prefixed(say: Callable[[str], None], name: str) -> Callable[[str], None]:
    return lambda message: say(f"{name}: {message}")
