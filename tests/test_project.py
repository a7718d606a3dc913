"""The project's own files: what the package ships and what CI runs."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_data_pattern_ships_a_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data: dict[str, list[str]] = config["tool"]["setuptools"]["package-data"]
    for package, patterns in package_data.items():
        folder = ROOT / "src" / package.replace(".", "/")
        for pattern in patterns:
            assert any(p.is_file() for p in folder.glob(pattern)), f"{package}: {pattern!r} matches no file"


def test_ci_runs_the_checks_after_the_tests() -> None:
    commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    assert "make test" in commands and "make check" in commands
    assert commands.index("make check") > commands.index("make test")


def test_the_grafana_dashboard_uses_only_declared_metrics() -> None:
    import json
    import re

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "leanserve.json").read_text(encoding="utf-8"))
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs and all(t.get("datasource") for p in dashboard["panels"] for t in p.get("targets", []))
    declared = (ROOT / "src" / "leanserve" / "server" / "metrics.py").read_text(encoding="utf-8")
    for name in set(re.findall(r"\bleanserve_\w+", " ".join(exprs))):
        family = re.sub(r"_(bucket|sum|count|total)$", "", name)
        assert f'"{family}"' in declared, f"{name} is not declared in server/metrics.py"
