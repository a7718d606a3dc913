"""TorchServe peer: the ONNX model in an unarchived model folder, TorchServe's batching, one worker.

Run as: python benchmarks/peers/torchserve_app.py --model tiny --onnx model.onnx --port P --workdir DIR
(in the venv made by benchmarks/peer_envs.py; needs Java). Builds DIR/store/<model> with
torch-model-archiver (no archive: nothing to unpack at start), writes DIR/config.properties and
runs TorchServe in the foreground. Answers V2 JSON at /predictions/<model>.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import v2

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    o = v2.options(__doc__ or "")
    work = Path(o.workdir)
    store, staging = work / "store", work / "staging"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    store.mkdir(parents=True)
    staging.mkdir(parents=True)
    (staging / "settings.json").write_text(json.dumps({"model": o.model, "threads": o.threads}))
    bin_dir = Path(sys.executable).parent
    shutil.copy(o.onnx, staging / "model.onnx")
    extra = [str(HERE / "v2.py"), str(staging / "settings.json"), str(staging / "model.onnx")]
    subprocess.run(
        [
            str(bin_dir / "torch-model-archiver"),
            *("--model-name", o.model, "--version", "1.0", "--handler", str(HERE / "torchserve_handler.py")),
            *("--extra-files", ",".join(extra), "--export-path", str(store), "--archive-format", "no-archive"),
        ],
        check=True,
    )
    # TorchServe's batch window is in whole milliseconds, and at 0 its aggregator (Model.pollBatch, as
    # its source reads) ends a batch after the second request: the smallest window that batches is 1 ms.
    delay = max(1, round(o.window_ms))
    model = {"defaultVersion": True, "marName": o.model, "minWorkers": 1, "maxWorkers": 1}
    model |= {"batchSize": o.max_batch, "maxBatchDelay": delay, "responseTimeout": 120}
    config = work / "config.properties"
    config.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{o.port}",
                f"management_address=http://127.0.0.1:{free_port()}",
                f"metrics_address=http://127.0.0.1:{free_port()}",
                "disable_system_metrics=true",
                "default_workers_per_model=1",
                f"load_models={o.model}",
                "models=" + json.dumps({o.model: {"1.0": model}}),
                "",
            ]
        )
    )
    os.environ["LOG_LOCATION"] = str(work / "logs")
    os.environ["METRICS_LOCATION"] = str(work / "logs")
    cmd = [str(bin_dir / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth"]
    cmd += ["--model-store", str(store), "--ts-config", str(config)]
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
