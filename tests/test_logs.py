"""Log lines on stderr: text, or one JSON object per line carrying request ids."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from leanserve.errors import InvalidInput, ModelNotReady
from leanserve.failures import FailureLog
from leanserve.logs import JsonFormatter, configure_logging
from leanserve.router import RequestContext


def test_a_json_line_has_time_level_logger_message_and_the_request_fields() -> None:
    record = logging.LogRecord("leanserve.x", logging.WARNING, __file__, 1, "failed %s", ("here",), None)
    record.request_id, record.model, record.status, record.version = "req-9", "digits", 503, ""
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "warning" and doc["logger"] == "leanserve.x" and doc["message"] == "failed here"
    assert doc["time"].endswith("Z")
    assert (doc["request_id"], doc["model"], doc["status"]) == ("req-9", "digits", 503)
    assert "version" not in doc  # empty fields are left out


def test_exceptions_go_into_one_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("leanserve", logging.ERROR, __file__, 1, "oops", (), sys.exc_info())
    doc = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in doc["exception"]


def test_server_failures_are_logged_as_json_with_their_request_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("info", "json")
    try:
        log = FailureLog(None)
        log.open()
        log.record(RequestContext("req-503", "10.1.2.3"), "digits", "2", ModelNotReady("model 'digits' is loading"))
        log.record(RequestContext("req-400", "10.1.2.3"), "digits", "2", InvalidInput("bad"))  # debug: not shown
        log.close()
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    [line] = [entry for entry in lines if entry["logger"] == "leanserve.failures"]
    assert line["request_id"] == "req-503" and line["status"] == 503 and line["client"] == "10.1.2.3"
    assert line["model"] == "digits" and line["version"] == "2" and line["failed_at"].endswith("Z")
    assert "req-503" in line["message"]
