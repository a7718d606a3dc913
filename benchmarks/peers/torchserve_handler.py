"""TorchServe handler for the ONNX peer: V2 JSON bodies in, a batch through ONNX Runtime, V2 JSON out.

Copied into the model's folder by torchserve_app.py with v2.py, model.onnx and settings.json;
TorchServe's frontend gathers up to batchSize requests (its own batching) and calls handle() once.
"""

from __future__ import annotations

import json
import os
from typing import Any

import v2

_engine: v2.Engine | None = None
_model = ""


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
    global _engine, _model
    if _engine is None:
        folder = context.system_properties["model_dir"]
        with open(os.path.join(folder, "settings.json")) as f:
            settings = json.load(f)
        _model = settings["model"]
        _engine = v2.Engine(os.path.join(folder, "model.onnx"), settings["threads"])
    if data is None:
        return None
    feeds = [v2.decode(row.get("body") or row.get("data")) for row in data]
    sizes = [len(next(iter(f.values()))) for f in feeds]
    outputs = v2.split(_engine.run(v2.stack(feeds)), sizes)
    return [json.dumps(v2.encode(_model, o)) for o in outputs]
