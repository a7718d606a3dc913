"""Where a model comes from: an ONNX file, a ``torch.export`` program (.pt2), or a live module.

Every source becomes one ONNX file (torch models through :mod:`.export`) with unique node names
(the fallback names nodes to keep in float). Nothing here unpickles an arbitrary file: formats
that need pickle are refused, and a .pt2 archive is opened only when none of its payloads is pickled.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnx

from ..errors import UsageError
from .export import ExportSpec, batch_spec, export_onnx

_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".sav")


@dataclass(frozen=True, slots=True)
class Source:
    kind: Literal["onnx", "pt2", "torch.nn.Module"]
    origin: str  # the user's file, or the module's class name
    sha256: str  # of the user's file; of the exported ONNX for a live module
    onnx_path: Path  # what every variant starts from
    original_file: Path  # what the "original" version serves (the user's bytes when possible)
    notes: tuple[str, ...] = ()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare(model: Any, workdir: Path, example_inputs: tuple[Any, ...] | None = None) -> Source:
    """Turn ``model`` (a path or a torch.nn.Module) into a Source in ``workdir``."""
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.exists():
            raise UsageError(f"model file {path} does not exist")
        if path.is_dir():
            raise UsageError(f"{path} is a folder", hint="pass the model file (.onnx or .pt2)")
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            return _from_onnx(path, workdir)
        if suffix == ".pt2":
            return _from_pt2(path, workdir)
        if suffix in _PICKLE_SUFFIXES:
            raise UsageError(
                f"{path} would have to be unpickled, which can run arbitrary code; leanserve refuses it",
                hint="save the model with torch.export.save(...) as .pt2, or export it to ONNX",
            )
        raise UsageError(f"{path}: unknown model format {suffix!r}", hint="pass an .onnx or a .pt2 file")
    if _is_torch_module(model):
        if example_inputs is None:
            raise UsageError(
                "a torch.nn.Module needs example_inputs to be exported",
                hint="pass example_inputs=(tensor, ...) with a batch of realistic shape",
            )
        return _from_module(model, tuple(example_inputs), workdir)
    raise UsageError(
        f"cannot optimize a {type(model).__name__}",
        hint="pass a path to .onnx / .pt2, or a torch.nn.Module with example_inputs",
    )


def _load_onnx(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf and checker errors have no common base
        raise UsageError(f"{path} is not a valid ONNX model: {e}") from e
    return model


def unique_node_names(model: onnx.ModelProto) -> int:
    """Name every node, uniquely (exporters leave names empty or repeat them); the count renamed."""
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        base, n = name, 1
        while name in seen:
            name, n = f"{base}_{n}", n + 1
        if name != node.name:
            node.name = name
            renamed += 1
        seen.add(name)
    return renamed


def _from_onnx(path: Path, workdir: Path) -> Source:
    model = _load_onnx(path)
    renamed = unique_node_names(model)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    out = workdir / "source.onnx"
    onnx.save(model, str(out))  # weights now inline: onnx.load read the external data
    notes = []
    original = path
    if renamed:
        notes.append(f"{renamed} node(s) without a unique name were named")
    if renamed or external:
        original = out
    return Source("onnx", str(path), sha256_of(path), out, original, tuple(notes))


def _check_pt2_is_pickle_free(path: Path) -> None:
    refuse = UsageError(
        f"{path} holds pickled payloads, and leanserve never unpickles a file",
        hint="save plain tensors: torch.export.save(program, path) without custom objects, or export to ONNX",
    )
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if not any("/models/" in n and n.endswith(".json") for n in names):
                raise UsageError(
                    f"{path} is not a torch.export archive (or an old, pickled format)",
                    hint="save it again with torch.export.save on PyTorch 2.7 or newer",
                )
            for name in names:
                base = name.rsplit("/", 1)[-1]
                if ("/weights/" in name or "/constants/" in name) and base.endswith(".pt"):
                    raise refuse  # the legacy whole-state-dict pickle
                if base.startswith(("custom_obj", "opaque_obj")):
                    raise refuse
                if "/sample_inputs/" in name and not _loads_weights_only(z.read(name)):
                    # torch.export.load retries a failing weights_only load with full pickle.
                    raise refuse
                if name.endswith("_config.json") and ("/weights/" in name or "/constants/" in name):
                    config = json.loads(z.read(name))
                    entries = config.get("config", {}).values() if isinstance(config, dict) else []
                    if any(isinstance(e, dict) and e.get("use_pickle") for e in entries):
                        raise refuse
    except zipfile.BadZipFile as e:
        raise UsageError(f"{path} is not a .pt2 archive: {e}") from e


def _loads_weights_only(payload: bytes) -> bool:
    import io

    import torch

    try:
        torch.load(io.BytesIO(payload), weights_only=True)
    except Exception:
        return False
    return True


def _from_pt2(path: Path, workdir: Path) -> Source:
    _check_pt2_is_pickle_free(path)
    import torch

    program = torch.export.load(str(path))
    out = workdir / "exported.onnx"
    notes = _export(program, (), ExportSpec(), out)  # the program carries its own dynamic shapes
    model = _load_onnx(out)
    renamed = unique_node_names(model)
    onnx.save(model, str(workdir / "source.onnx"))
    if renamed:
        notes.append(f"{renamed} node(s) without a unique name were named")
    src = workdir / "source.onnx"
    return Source("pt2", str(path), sha256_of(path), src, src, tuple(notes))


def _from_module(module: Any, example_inputs: tuple[Any, ...], workdir: Path) -> Source:
    out = workdir / "exported.onnx"
    notes = _export(module, example_inputs, batch_spec(module, len(example_inputs)), out)
    model = _load_onnx(out)
    renamed = unique_node_names(model)
    src = workdir / "source.onnx"
    onnx.save(model, str(src))
    if renamed:
        notes.append(f"{renamed} node(s) without a unique name were named")
    return Source("torch.nn.Module", type(module).__name__, sha256_of(src), src, src, tuple(notes))


def _export(model: Any, args: tuple[Any, ...], spec: ExportSpec, out: Path) -> list[str]:
    """Export with the shared exporter; the notes say which exporter made the file, and why."""
    notes: list[str] = []  # a fallback to TorchScript says why as it happens
    if export_onnx(model, args, out, spec, notes.append) == "dynamo":
        notes.append("exported with the dynamo ONNX exporter")
    return notes


def _is_torch_module(obj: Any) -> bool:
    # Checked without importing torch: a user passing a path never pays for it.
    return any(f"{c.__module__}.{c.__qualname__}" == "torch.nn.modules.module.Module" for c in type(obj).__mro__)


def copy_original(source: Source, dest: Path) -> None:
    shutil.copyfile(source.original_file, dest)
