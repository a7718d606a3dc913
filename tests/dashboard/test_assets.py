"""The files the dashboard serves: its own (listed), the chart library (pinned), reports of known models only."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import leanserve.dashboard
from leanserve.dashboard.assets import (
    STATIC,
    index_page,
    login_page,
    report_file,
    report_links,
    static_asset,
)

STATIC_DIR = Path(leanserve.dashboard.__file__).parent / "static"


def test_every_listed_asset_ships_and_nothing_else_is_served() -> None:
    for name in STATIC:
        asset = static_asset(name)
        assert asset is not None and asset[0], name
    for name in ("index.html", "VENDORED.md", "../assets.py", "", "dashboard.js/"):
        assert static_asset(name) is None


def test_vendored_files_match_their_pinned_hashes_and_keep_their_licence() -> None:
    table = (STATIC_DIR / "VENDORED.md").read_text(encoding="utf-8")
    pinned = dict(re.findall(r"^\| `([^`]+)` \|.*\| ([0-9a-f]{64}) \|$", table, re.MULTILINE))
    assert set(pinned) == {"uPlot.iife.min.js", "uPlot.min.css"}
    for name, digest in pinned.items():
        assert hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (STATIC_DIR / "uPlot.LICENSE").read_text(encoding="utf-8")
    assert b"uPlot (v1.6.32)" in (STATIC_DIR / "uPlot.iife.min.js").read_bytes()[:100]


def test_the_page_loads_only_its_own_files_and_runs_no_inline_script() -> None:
    page = index_page().decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/dashboard/static/") or s == "data:," for s in sources)  # "data:,": no icon
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)  # every script is a file (the CSP forbids inline)
    assert "Experiments" in page


def test_the_sign_in_page_escapes_its_message() -> None:
    assert b"&lt;b&gt;" in login_page("<b>") and b"<b>" not in login_page("<b>")


def test_reports_only_for_known_models_and_only_the_two_files(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "report.html").write_text("<p>report</p>")
    (tmp_path / "m" / "model.toml").write_text("")
    (tmp_path / "secret.txt").write_text("no")
    html = (tmp_path / "m" / "report.html", "text/html; charset=utf-8")
    assert report_file(tmp_path, ["m"], "m", "report.html") == html
    assert report_file(tmp_path, ["m"], "m", "report.json") is None  # not written
    assert report_file(tmp_path, ["m"], "m", "model.toml") is None
    assert report_file(tmp_path, ["m"], "other", "report.html") is None
    assert report_file(tmp_path, ["m"], "..", "report.html") is None
    assert report_file(tmp_path, ["m"], "m", "../secret.txt") is None
    assert report_links(tmp_path, "m") == {"html": "/dashboard/reports/m/report.html"}
