"""Write kept variants into the model repository as numbered versions, and merge model.toml.

Each version folder gets its files; ``model.toml`` gets a ``[versions.N]`` table (platform,
model file, runtime, batching, label, provenance) and ``default_version``. The existing file is
read and merged, never clobbered: inputs, outputs, metadata and other versions stay. The
default version is written last, so it is also the highest: a "latest" policy serves it too.
"""

from __future__ import annotations

import math
import os
import shutil
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import tomli_w

from ..config import (
    DynamicBatching,
    Platform,
    RuntimeOptions,
    VersionOverrides,
    VersionPolicy,
    load_model_config,
    parse_model_config,
    to_table,
)
from ..errors import ConfigError, ServerError, UsageError
from ..repository import DEFAULT_MAX_BATCH_SIZE, version_folders


@dataclass(frozen=True, slots=True)
class VersionEntry:
    label: str  # the variant name
    files: tuple[Path, ...]
    platform: str
    runtime: RuntimeOptions
    # The batch the sweep found best. It becomes the batcher's preferred size; it never lowers
    # the rows a client may send, which stay the model's max_batch_size.
    batch_size: int | None
    dynamic_batching: DynamicBatching | None
    provenance: dict[str, Any]

    @property
    def model_file(self) -> str:
        return self.files[0].name


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            str(path),
            None,
            f"cannot be read to merge the new versions: {e}",
            hint="fix or remove the file, then run optimize again",
        ) from e


def tomlable(value: Any) -> Any:
    """A value TOML can hold: no None (dropped), no tuples, paths or numpy scalars."""
    if isinstance(value, dict):
        return {str(k): tomlable(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [tomlable(v) for v in value if v is not None]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return tomlable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _overrides(e: VersionEntry, model_max_batch: int) -> VersionOverrides:
    batching = e.dynamic_batching
    if batching is not None:
        # The sweep's best batch is what the batcher aims for.
        preferred = (e.batch_size,) if e.batch_size is not None and e.batch_size > 1 else ()
        batching = replace(batching, preferred_batch_sizes=preferred)
    return VersionOverrides(
        platform=cast(Platform, e.platform),  # checked when the written file is read back
        model_file=e.model_file,
        runtime=e.runtime,
        # Measured to run well: requests may send that many.
        max_batch_size=e.batch_size if e.batch_size is not None and e.batch_size > model_max_batch > 0 else None,
        dynamic_batching=batching,
        label=e.label,
        provenance=tomlable(e.provenance),
    )


def write_versions(repo: Path, name: str, entries: Sequence[VersionEntry], default_label: str) -> dict[str, int]:
    """Write ``entries`` as new versions of ``repo/name``; returns label -> version number."""
    if not entries or default_label not in {e.label for e in entries}:
        raise ValueError("the default entry must be among the entries written")
    if "/" in name or "\\" in name or name in ("", ".", ".."):
        raise UsageError(f"model name {name!r} must be a plain folder name")
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    toml_path = model_dir / "model.toml"
    data = _read_toml(toml_path)
    # The user's file is checked before anything is written, so its mistakes are reported as theirs.
    existing = parse_model_config(data, name, str(toml_path))
    previous_text = toml_path.read_text(encoding="utf-8") if toml_path.exists() else None

    ordered = [e for e in entries if e.label != default_label] + [e for e in entries if e.label == default_label]
    first = max([0, *version_folders(model_dir), *existing.versions]) + 1
    model_max_batch = DEFAULT_MAX_BATCH_SIZE if existing.max_batch_size is None else existing.max_batch_size
    numbers: dict[str, int] = {}
    created: list[Path] = []
    try:
        for offset, entry in enumerate(ordered):
            version = first + offset
            folder = model_dir / str(version)
            folder.mkdir()
            created.append(folder)
            for f in entry.files:
                shutil.copyfile(f, folder / f.name)
            data.setdefault("versions", {})[str(version)] = to_table(_overrides(entry, model_max_batch))
            numbers[entry.label] = version
        data.setdefault("platform", "onnxruntime")
        data["default_version"] = numbers[default_label]
        if "version_policy" not in data:
            # Serve every version just written (the default and the kept alternatives),
            # not the older ones a previous run left behind.
            policy = VersionPolicy("specific", versions=tuple(sorted(numbers.values())))
            data["version_policy"] = to_table(policy)
        elif existing.version_policy.kind == "specific":
            # A user's explicit list gains the new versions; other policies are theirs to keep.
            policy = existing.version_policy
            data["version_policy"] = to_table(
                replace(policy, versions=tuple(sorted({*policy.versions, *numbers.values()})))
            )
        tmp = toml_path.with_suffix(".toml.tmp")
        tmp.write_text(tomli_w.dumps(tomlable(data)), encoding="utf-8")
        os.replace(tmp, toml_path)
        load_model_config(model_dir)  # what we wrote must read back; a failure is our bug
    except ConfigError as e:
        _undo(created, toml_path, previous_text)
        raise ServerError(f"optimize wrote a model.toml that does not validate: {e}") from e
    except BaseException:
        _undo(created, toml_path, previous_text)
        raise
    return numbers


def _undo(created: list[Path], toml_path: Path, previous_text: str | None) -> None:
    for folder in created:
        shutil.rmtree(folder, ignore_errors=True)
    if previous_text is None:
        toml_path.unlink(missing_ok=True)
    else:
        toml_path.write_text(previous_text, encoding="utf-8")
