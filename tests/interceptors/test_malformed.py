"""Requests whose bytes are not the method's message (malformed.py), sent raw through the chain:
INVALID_ARGUMENT with reason MALFORMED_REQUEST, one request-log entry per call, counted per
client address, no token check, and at most a rate-limited warning in the process log instead
of grpcio's ERROR traceback per call."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence

import grpc
import pytest
from grpc_interceptor.testing.protos.dummy_pb2 import DummyRequest

from luman.interceptors import malformed
from luman.interceptors.base import MethodInterceptor
from luman.interceptors.client_address import CallerResolver
from luman.interceptors.error_mapping import ErrorMappingInterceptor
from luman.interceptors.rate_limit import ClientRateLimitInterceptor, Policy, SlidingWindowLimiter
from luman.interceptors.request_logging import RequestLogEntry, RequestLoggingInterceptor
from luman.interceptors.token_auth import TokenAuthInterceptor
from tests.interceptors.dummy import (
    BIDI_STREAM,
    CALL_TIMEOUT,
    CLIENT_STREAM,
    EXECUTE,
    SERVER_STREAM,
    RecordingVerifier,
    serve_channel,
)
from tests.support import RichError, rich_error

CORRUPT = b"\xff\xff\xff"  # not a protobuf wire format at all
BAD_UTF8 = b"\x0a\x02\xff\xfe"  # field 1 (string input) holding invalid UTF-8
GOOD_TOKEN = (("authorization", "Bearer good"),)
REFUSED = (grpc.StatusCode.INVALID_ARGUMENT, malformed.REASON)


@contextlib.contextmanager
def _chain(
    entries: list[RequestLogEntry],
    verifier: RecordingVerifier | None = None,
    limit: int = 1000,
) -> Iterator[grpc.Channel]:
    """The server's chain shape around DummyService: logging, error mapping, per-IP limit,
    token authentication (no public methods)."""
    stages: list[MethodInterceptor] = [
        RequestLoggingInterceptor(entries.append, CallerResolver()),
        ErrorMappingInterceptor(),
        ClientRateLimitInterceptor(
            policy_of=lambda _: Policy.DEFAULT,
            limiters={Policy.DEFAULT: SlidingWindowLimiter(limit, 900.0, lambda: 0.0)},
        ),
        TokenAuthInterceptor(verifier or RecordingVerifier(), public_methods=()),
    ]
    with serve_channel(stages) as channel:
        yield channel


def _refused(channel: grpc.Channel, body: bytes, metadata: Sequence[tuple[str, str]]) -> RichError:
    call = channel.unary_unary(EXECUTE, None, None)
    with pytest.raises(grpc.RpcError) as caught:
        call(body, timeout=CALL_TIMEOUT, metadata=tuple(metadata))
    return rich_error(caught.value)


@pytest.mark.parametrize("body", [CORRUPT, BAD_UTF8], ids=["corrupt", "bad utf-8"])
def test_an_undecodable_request_is_invalid_argument_and_logged(
    body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    entries: list[RequestLogEntry] = []
    with _chain(entries) as channel:
        errors = [_refused(channel, body, GOOD_TOKEN) for _ in range(20)]
    for error in errors:
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == malformed.REASON == "MALFORMED_REQUEST"
        assert error.domain == "DummyService"
        assert set(error.field_violations) == {"request"}
    assert [(e.method, e.status) for e in entries] == [(EXECUTE, "INVALID_ARGUMENT")] * 20
    assert all(e.client_ip in ("127.0.0.1", "::1") for e in entries)
    # No traceback per call (grpcio's "Exception deserializing request!"), at most one
    # warning for all of them.
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    warnings = [r for r in caplog.records if r.name == malformed.__name__]
    assert len(warnings) <= 1
    assert all(r.levelno == logging.WARNING for r in warnings)


def test_an_undecodable_request_is_refused_before_any_token_check() -> None:
    entries: list[RequestLogEntry] = []
    verifier = RecordingVerifier()
    with _chain(entries, verifier) as channel:
        for metadata in ((), GOOD_TOKEN, (("authorization", "Bearer bad"),)):
            error = _refused(channel, CORRUPT, metadata)
            assert (error.code, error.reason) == REFUSED
    assert verifier.tokens == []
    assert [e.user_id for e in entries] == [None] * 3


def test_undecodable_requests_count_per_client_address_whatever_their_token() -> None:
    entries: list[RequestLogEntry] = []
    with _chain(entries, limit=2) as channel:
        for _ in range(2):
            assert _refused(channel, CORRUPT, GOOD_TOKEN).code == grpc.StatusCode.INVALID_ARGUMENT
        error = _refused(channel, CORRUPT, GOOD_TOKEN)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert [e.status for e in entries] == ["INVALID_ARGUMENT"] * 2 + ["RESOURCE_EXHAUSTED"]


def test_a_request_decodes_as_usual_through_the_chain() -> None:
    entries: list[RequestLogEntry] = []
    with _chain(entries) as channel:
        call = channel.unary_unary(EXECUTE, None, None)
        body = DummyRequest(input="fine").SerializeToString()
        response = call(body, timeout=CALL_TIMEOUT, metadata=GOOD_TOKEN)
    assert b"fine" in response
    assert [e.status for e in entries] == ["OK"]


def test_an_undecodable_request_of_a_streaming_method_is_invalid_argument() -> None:
    entries: list[RequestLogEntry] = []
    good = DummyRequest(input="fine").SerializeToString()
    with _chain(entries) as channel:
        calls: list[Callable[[], object]] = [
            lambda: list(
                channel.unary_stream(SERVER_STREAM, None, None)(
                    CORRUPT, timeout=CALL_TIMEOUT, metadata=GOOD_TOKEN
                )
            ),
            lambda: channel.stream_unary(CLIENT_STREAM, None, None)(
                iter([good, CORRUPT]), timeout=CALL_TIMEOUT, metadata=GOOD_TOKEN
            ),
            lambda: list(
                channel.stream_stream(BIDI_STREAM, None, None)(
                    iter([good, CORRUPT]), timeout=CALL_TIMEOUT, metadata=GOOD_TOKEN
                )
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as caught:
                call()
            error = rich_error(caught.value)
            assert (error.code, error.reason) == REFUSED
    assert [(e.method, e.status) for e in entries] == [
        (SERVER_STREAM, "INVALID_ARGUMENT"),
        (CLIENT_STREAM, "INVALID_ARGUMENT"),
        (BIDI_STREAM, "INVALID_ARGUMENT"),
    ]
