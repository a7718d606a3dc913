"""What benchmarks/peers.py records, and the tables, targets and chart it makes of a run.

Everything here reads the run's JSON document (benchmarks/out/peers.json), so a run can be
reported again without being measured again: ``python benchmarks/peers_report.py out/peers.json``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LEAN = "leanserve"
NAMES = {
    "leanserve": "**leanserve**",
    "fastapi": "FastAPI + uvicorn",
    "litserve": "LitServe",
    "bentoml": "BentoML",
    "rayserve": "Ray Serve",
    "mlserver": "MLServer",
    "pytriton": "PyTriton (Triton)",
    "torchserve": "TorchServe",
}
SMALL = ("tiny", "digits")
# leanserve stands out in black; every peer keeps its colour across the panels.
COLORS = {
    "leanserve": "black",
    "fastapi": "C0",
    "litserve": "C1",
    "bentoml": "C2",
    "rayserve": "C4",
    "mlserver": "C5",
    "pytriton": "C6",
    "torchserve": "C9",
}


@dataclass(frozen=True)
class Ceiling:
    items_per_s: dict[int, float]  # batch size -> items/s, ONNX Runtime in process
    p50_ms_batch1: float

    def at(self, concurrency: int) -> float:
        """The most the engine can serve at this concurrency: its best batch no larger than it."""
        return max(v for b, v in self.items_per_s.items() if int(b) <= concurrency)

    def __str__(self) -> str:
        rates = ", ".join(f"b{b} {v:,.0f}/s" for b, v in self.items_per_s.items())
        return f"{rates}, p50 {self.p50_ms_batch1:.3f} ms at b1"


@dataclass(frozen=True)
class Load:
    concurrency: int | None  # closed loop
    rate: float | None  # open loop, scheduled requests/s
    throughput: float  # answered requests/s
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: dict[str, int]
    client_cpu: float = float("nan")
    client_saturated: bool = False
    stable: bool = True


@dataclass(frozen=True)
class PeerRun:
    peer: str
    model: str
    cold_start_s: float = float("nan")
    idle_rss_mb: float = float("nan")
    loads: list[Load] = field(default_factory=list)
    slo_rate: float | None = None  # the highest open-loop rate found with p99 under the run's target
    error: str = ""


def _ceiling(doc: dict[str, Any], model: str) -> Ceiling:
    c = doc["ceilings"][model]
    return Ceiling({int(k): v for k, v in c["items_per_s"].items()}, c["p50_ms_batch1"])


def _level(load: dict[str, Any]) -> str:
    return f"c{load['concurrency']}" if load["concurrency"] is not None else f"{load['rate']:g}/s"


def _by_level(doc: dict[str, Any], model: str) -> dict[str, dict[str, dict[str, Any]]]:
    """peer -> level label -> load, for the peers that ran on ``model``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in doc["runs"]:
        if r["model"] == model and not r["error"]:
            out[r["peer"]] = {_level(ld): ld for ld in r["loads"]}
    return out


def _num(x: float, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def ratio(a: float, b: float) -> float:
    """a / b, NaN where b is not a positive number."""
    return a / b if b and b > 0 and not math.isnan(b) else float("nan")


def markdown(doc: dict[str, Any]) -> str:
    """The run's main table (peer x model x load level), then cold start and idle memory, then failures."""
    models = list(doc["ceilings"])
    lines = [
        "| model | server | load | req/s | p50 ms | p99 ms | errors | x ceiling | leanserve / it |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model in models:
        ceil = _ceiling(doc, model)
        levels = _by_level(doc, model)
        lean = levels.get(LEAN, {})
        for peer, loads in levels.items():
            for label, ld in loads.items():
                base = ceil.at(ld["concurrency"] or 32) if ld["concurrency"] else ld["rate"]
                versus = (
                    "" if peer == LEAN else _num(ratio(lean.get(label, {}).get("throughput", 0), ld["throughput"]), 2)
                )
                cells = [model, NAMES.get(peer, peer), label, _num(ld["throughput"]), _num(ld["p50_ms"], 3)]
                cells += [_num(ld["p99_ms"], 2), str(sum(ld["errors"].values()))]
                cells += [_num(ratio(ld["throughput"], base), 2), versus]
                lines.append("| " + " | ".join(cells) + " |")
    slo = doc.get("slo_p99_ms", 5.0)
    lines += ["", f"| server | model | cold start s | idle RSS MB | highest rate with p99 <= {slo:g} ms |"]
    lines.append("|---|---|---:|---:|---:|")
    for r in doc["runs"]:
        if not r["error"]:
            found = r.get("slo_rate")
            rate = "-" if found is None and r["model"] not in doc.get("slo_models", []) else _num(found or 0)
            lines.append(
                f"| {NAMES.get(r['peer'], r['peer'])} | {r['model']} | {_num(r['cold_start_s'], 1)} "
                f"| {_num(r['idle_rss_mb'])} | {rate} |"
            )
    failed = [r for r in doc["runs"] if r["error"]]
    if failed:
        lines += ["", "Did not run:"] + [
            f"- {NAMES.get(r['peer'], r['peer'])} on {r['model']}: {r['error']}" for r in failed
        ]
    ceil_lines = [f"- {m}: {_ceiling(doc, m)}" for m in models]
    return "\n".join(["Ceilings (ONNX Runtime in process, same threads):", *ceil_lines, "", *lines])


def targets(doc: dict[str, Any]) -> list[str]:
    """Issue 14's targets, each PASS or MISS as measured in this run."""
    rows: list[tuple[bool, str]] = []
    for model in doc["ceilings"]:
        levels = _by_level(doc, model)
        lean = levels.get(LEAN)
        others = {p: v for p, v in levels.items() if p != LEAN}
        if not lean or not others:
            rows.append((False, f"{model}: leanserve or every peer did not run"))
            continue
        for label in [k for k in lean if k.startswith("c")]:
            mine = lean[label]
            best_peer, best = max(
                ((p, v[label]) for p, v in others.items() if label in v), key=lambda pv: pv[1]["throughput"]
            )
            x = ratio(mine["throughput"], best["throughput"])
            if model in SMALL:
                ok = x >= 3 and mine["p99_ms"] <= best["p99_ms"]
                rows.append(
                    (
                        ok,
                        f"{model} {label}: {x:.2f}x the best peer "
                        f"({NAMES[best_peer]}, {best['throughput']:,.0f} req/s), "
                        f"p99 {mine['p99_ms']:.2f} vs {best['p99_ms']:.2f} ms (target 3x at equal or better p99)",
                    )
                )
            else:
                rows.append((x >= 1, f"{model} {label}: {x:.2f}x the best peer ({NAMES[best_peer]}) (target >= 1x)"))
        rates = {r["peer"]: r.get("slo_rate") for r in doc["runs"] if r["model"] == model and not r["error"]}
        if model in doc.get("slo_models", []) and rates.get(LEAN) is not None:
            best_peer = max((p for p in rates if p != LEAN), key=lambda p: rates[p] or 0)
            mine, theirs = rates[LEAN] or 0, rates[best_peer] or 0
            rows.append(
                (
                    mine > theirs,
                    f"{model} highest rate with p99 <= {doc.get('slo_p99_ms', 5):g} ms: leanserve {mine:,.0f}/s, "
                    f"best peer {NAMES[best_peer]} {theirs:,.0f}/s",
                )
            )
        if "c1" in lean:
            fastest = min(((p, v["c1"]["p50_ms"]) for p, v in levels.items() if "c1" in v), key=lambda pv: pv[1])
            rows.append(
                (
                    fastest[0] == LEAN,
                    f"{model} c1 lowest p50: leanserve {lean['c1']['p50_ms']:.3f} ms, "
                    f"lowest {NAMES[fastest[0]]} {fastest[1]:.3f} ms",
                )
            )
    return [f"  {'PASS' if ok else 'MISS'}  {text.replace('**', '')}" for ok, text in rows]


def chart(doc: dict[str, Any], path: Path) -> None:
    """Throughput per server and concurrency, one panel per model, log scale; a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(doc["ceilings"])
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        levels = _by_level(doc, model)
        labels = sorted({k for v in levels.values() for k in v if k.startswith("c")}, key=lambda s: int(s[1:]))
        width = 0.8 / max(1, len(levels))
        for i, (peer, loads) in enumerate(levels.items()):
            xs = [j + i * width for j in range(len(labels))]
            ys = [loads[k]["throughput"] if k in loads else 0 for k in labels]
            ax.bar(xs, ys, width, label=NAMES.get(peer, peer).strip("*"), color=COLORS.get(peer, "C7"))
        ceil = _ceiling(doc, model)
        for j, k in enumerate(labels):
            ax.hlines(ceil.at(int(k[1:])), j - width / 2, j + 0.8 - width / 2, colors="k", linestyles="dotted")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels)
        ax.set_yscale("log")
        ax.set_title(f"{model} (dotted: ONNX Runtime in process)", fontsize=8)
        ax.set_ylabel("requests/s")
    axes[0][0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    doc = json.loads(Path(sys.argv[1]).read_text())
    print(markdown(doc))
    print("\n".join(targets(doc)))
    if len(sys.argv) > 2:
        chart(doc, Path(sys.argv[2]))
