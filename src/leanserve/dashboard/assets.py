"""The files the dashboard serves: its own static assets, and each model's optimize report.

Nothing else from disk: static files are a fixed list inside the package, and a report is only
``report.html`` or ``report.json`` in the folder of a model the registry knows.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import Final

STATIC: Final[dict[str, str]] = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
REPORTS: Final[dict[str, str]] = {
    "report.html": "text/html; charset=utf-8",
    "report.json": "application/json",
}


@functools.cache
def _read(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def static_asset(name: str) -> tuple[bytes, str] | None:
    """(content, content type) of one of the dashboard's static files, or None when it is not one."""
    content_type = STATIC.get(name)
    return None if content_type is None else (_read(name), content_type)


def index_page() -> bytes:
    return _read("index.html")


def login_page(message: str = "") -> bytes:
    return _read("login.html").replace(b"{message}", html.escape(message).encode())


def report_file(repository: Path, models: Collection[str], model: str, name: str) -> tuple[Path, str] | None:
    """(path, content type) of a model's optimize report when it exists; None for anything else."""
    content_type = REPORTS.get(name)
    if content_type is None or model not in models:
        return None
    path = repository / model / name
    return (path, content_type) if path.is_file() else None


def report_links(repository: Path, model: str) -> dict[str, str]:
    """The dashboard's links to a model's reports that exist: {"html": url, "json": url}."""
    return {
        name.rsplit(".", 1)[1]: f"/dashboard/reports/{model}/{name}"
        for name in REPORTS
        if (repository / model / name).is_file()
    }


__all__ = ["REPORTS", "STATIC", "index_page", "login_page", "report_file", "report_links", "static_asset"]
