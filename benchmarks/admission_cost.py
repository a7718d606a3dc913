"""What admission control costs a request on an idle model: the direct path in process, before and after.

    make bench-admission-cost    # or: .venv/bin/python benchmarks/admission_cost.py [--before-ref REF]

The tiny model through ``Router.infer`` and through the whole fast front end (bytes into
``HttpProtocol``, the answer out of its transport), in child processes that alternate between the
source tree of ``--before-ref`` (default: where this branch left ``main``) and this one. The
children are benchmarks/experiments.py's, timed here in the process's CPU time (``process_time``)
rather than wall time, so that other processes on a shared machine add as little as they can.
Admission adds a context field, one attribute check before decoding, a caller handed to the
batcher and a few comparisons per flush; the issue asks that an idle or lightly loaded model pay
nothing measurable for them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import environment, v2_body

import experiments
from experiments import ROOT, hot_path, repository


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before-ref", default=None, help="git ref to compare with (default: merge-base with main)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    ref = args.before_ref
    if ref is None:
        merge_base = ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"]
        ref = subprocess.run(merge_base, capture_output=True, text=True, check=True).stdout.strip()
    # The same children, timed in the process's CPU time: waiting for a core is not the request's cost.
    experiments.CHILD = experiments.CHILD.replace("time.perf_counter_ns()", "time.process_time_ns()")
    body = v2_body({"x": np.random.default_rng(1).normal(size=(1, 64)).astype(np.float32)})
    with tempfile.TemporaryDirectory() as tmp:
        result = hot_path(repository(Path(tmp) / "repo"), body, ref, args.rounds, args.calls)
    result["environment"] = environment()
    for path in ("router", "http"):
        r = result[path]
        print(
            f"{path}: {r['before_ns'] / 1000:.2f} us -> {r['after_ns'] / 1000:.2f} us per request ({r['change']:+.1%})"
        )
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / "admission_cost.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    raise SystemExit(main())
