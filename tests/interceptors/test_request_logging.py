"""RequestLoggingInterceptor on a bare server: one entry per call with the final status,
streaming calls logged when the stream ends, a failing sink never failing the call, and the call
record opened for the stages inside even with the request log off."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import Any

import grpc
import pytest
from grpc_interceptor.testing.dummy_client import SpecialCaseFunction
from grpc_interceptor.testing.protos.dummy_pb2 import DummyRequest

from luman.interceptors.base import MethodInterceptor
from luman.interceptors.call_context import current_call
from luman.interceptors.client_address import CallerResolver
from luman.interceptors.error_mapping import ErrorMappingInterceptor
from luman.interceptors.errors import NotFoundError
from luman.interceptors.request_logging import RequestLogEntry, RequestLoggingInterceptor
from tests.interceptors.dummy import EXECUTE, serve
from tests.support import FakeClock


def _abort(_: str, context: Any) -> str:  # dummy_client also serves grpc.aio
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
    raise AssertionError("unreachable")


def _not_found(_: str, context: Any) -> str:
    raise NotFoundError("THING_NOT_FOUND", "thing not found")


def _crash(_: str, context: Any) -> str:
    raise RuntimeError("boom with a secret")


CASES: dict[str, SpecialCaseFunction] = {
    "abort": _abort,
    "not-found": _not_found,
    "crash": _crash,
}


def _logged(*inputs: str, error_mapping: bool = True) -> list[RequestLogEntry]:
    entries: list[RequestLogEntry] = []
    clock = FakeClock()
    logging = RequestLoggingInterceptor(entries.append, CallerResolver(), clock=clock)
    chain: list[MethodInterceptor] = (
        [logging, ErrorMappingInterceptor()] if error_mapping else [logging]
    )
    with serve(chain, CASES) as client:
        for text in inputs:
            with contextlib.suppress(grpc.RpcError):
                client.Execute(DummyRequest(input=text))
    return entries


def test_one_entry_per_call_with_its_final_status() -> None:
    entries = _logged("hello", "abort", "not-found", "crash")
    assert [e.status for e in entries] == ["OK", "PERMISSION_DENIED", "NOT_FOUND", "INTERNAL"]
    for entry in entries:
        assert entry.method == EXECUTE
        assert entry.client_ip in ("127.0.0.1", "::1")
        assert "grpc-python" in entry.user_agent
        assert entry.user_id is None
        assert entry.duration_ms >= 0
        assert entry.time == dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def test_an_unmapped_exception_is_logged_as_unknown() -> None:
    assert [e.status for e in _logged("crash", error_mapping=False)] == ["UNKNOWN"]


def test_streaming_call_is_logged_when_the_stream_ends() -> None:
    entries: list[RequestLogEntry] = []
    logging = RequestLoggingInterceptor(entries.append, CallerResolver())
    with serve([logging]) as client:
        stream = client.ExecuteServerStream(DummyRequest(input="abc"))
        assert [r.output for r in stream] == ["a", "b", "c"]
    assert [(e.method, e.status) for e in entries] == [("/DummyService/ExecuteServerStream", "OK")]


def test_skipped_methods_are_not_sent_to_the_sink() -> None:
    entries: list[RequestLogEntry] = []
    logging = RequestLoggingInterceptor(
        entries.append, CallerResolver(), skip=lambda name: name == EXECUTE
    )
    with serve([logging]) as client:
        client.Execute(DummyRequest(input="x"))
    assert entries == []


def test_a_failing_sink_never_fails_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken(entry: RequestLogEntry) -> None:
        raise OSError("disk on fire")

    logging = RequestLoggingInterceptor(broken, CallerResolver())
    with serve([logging]) as client:
        assert client.Execute(DummyRequest(input="still fine")).output == "still fine"
    assert "request log sink failed" in caplog.text


def test_the_per_call_line_is_written_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    # The request log is the record of every call; an INFO line per call cost every RPC.
    name = "luman.interceptors.request_logging"
    caplog.set_level(logging.INFO, logger=name)
    assert len(_logged("hello", "not-found")) == 2
    assert "rpc " not in caplog.text
    caplog.set_level(logging.DEBUG, logger=name)
    _logged("hello")
    assert f"rpc {EXECUTE} OK" in caplog.text


def test_without_a_sink_the_stage_still_opens_each_calls_record() -> None:
    # REQUEST_LOG_ENABLED=false: the stages inside still read the call's record.
    def where(_: str, context: Any) -> str:
        return current_call().caller.ip

    with serve([RequestLoggingInterceptor(None, CallerResolver())], {"where": where}) as client:
        assert client.Execute(DummyRequest(input="where")).output in ("127.0.0.1", "::1")
