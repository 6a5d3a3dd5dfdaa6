"""The process log's two formats (LOG_FORMAT): "text", one line for people, and "json", one
JSON object per line for log collectors.

A JSON line holds `time` (RFC 3339, UTC, milliseconds), `level`, `logger` and `message`; then,
when known, `request_id` (the x-request-id the client sent with the call being served, checked
as audit events check it: printable ASCII of at most 64 characters), `trace_id` (the
OpenTelemetry trace id of the call being served, when tracing is on and the call's span is
sampled: interceptors/tracing.py; or a `trace_id` attribute on the record) and `exception` (the
traceback of `logger.exception(...)`, as one string). Nothing else from the record is copied:
what a line says is exactly its message, which never holds a secret (STYLE.md, section 6).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from luman.interceptors.call_context import optional_call
from luman.server.audit.record import request_id as checked_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or a traceback are
    escaped by JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # The call being served on this thread (its record is a ContextVar that
        # RequestLoggingInterceptor sets for the call's duration); None outside a call.
        call = optional_call()
        trace_id = getattr(record, "trace_id", "")
        if call is not None:
            request_id = checked_request_id(call.request_id)
            if request_id:
                entry["request_id"] = request_id
            trace_id = trace_id or call.trace_id
        if isinstance(trace_id, str) and trace_id:
            entry["trace_id"] = trace_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


def _rfc3339(created: float) -> str:
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _HoldingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_held: list[logging.LogRecord] = []


@contextlib.contextmanager
def holding_records() -> Iterator[None]:
    """Keep what is logged in the block (reading the settings, which say the format) for
    `configure_logging` to write in the chosen format; if the block fails, write it at once,
    as unconfigured logging would have. Logging that is configured already is left alone."""
    root = logging.getLogger()
    if root.handlers:
        yield
        return
    holder = _HoldingHandler()
    root.addHandler(holder)
    try:
        yield
    except BaseException:
        last_resort = logging.lastResort
        if last_resort is not None:
            for record in holder.records:
                if record.levelno >= last_resort.level:
                    last_resort.handle(record)
        raise
    else:
        _held.extend(holder.records)
    finally:
        root.removeHandler(holder)


def configure_logging(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Send the root logger's records at `level` and above to `stream` (standard error) in
    `log_format` ("text" or "json"), starting with those `holding_records` kept."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])
    # Through the loggers, to whichever handlers are in place (basicConfig leaves existing ones).
    for record in _held:
        held_by = logging.getLogger(record.name)
        if held_by.isEnabledFor(record.levelno):
            held_by.handle(record)
    _held.clear()
