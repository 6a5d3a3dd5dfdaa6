"""Prometheus metrics over gRPC: the figures on METRICS_PORT move with real calls."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator

import grpc
import httpx
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App, BindError, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.metrics_support import GET_ME, moved, scrape, value
from tests.support import FakeClock, bearer, get_me, refused_reason, register, rich_error


@pytest.fixture
def metrics_settings(settings: Settings) -> Settings:
    # A small default-policy budget, so that the fourth GetMe of a user is refused.
    return dataclasses.replace(settings, metrics_port=0, rate_limit_max_requests=3)


@pytest.fixture
def metered_app(
    metrics_settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[App]:
    server = build_server(metrics_settings, sessions, clock=clock, hasher=hasher)
    server.start()
    yield server
    server.stop(None)


@pytest.fixture
def metrics_url(metered_app: App) -> str:
    assert metered_app.metrics_listener is not None
    return f"http://127.0.0.1:{metered_app.metrics_listener.port}/metrics"


@pytest.fixture
def stub(metered_app: App) -> Iterator[auth_service_pb2_grpc.AuthServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{metered_app.port}") as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


def test_metrics_count_calls_by_method_and_code(
    stub: auth_service_pb2_grpc.AuthServiceStub, metrics_url: str
) -> None:
    token = register(stub).tokens.access_token
    before = scrape(metrics_url)
    get_me(stub, token)
    get_me(stub, token)
    after = scrape(metrics_url)

    assert moved(before, after, "grpc_server_started_total", **GET_ME) == 2
    assert moved(before, after, "grpc_server_handled_total", **GET_ME, grpc_code="OK") == 2
    assert moved(before, after, "grpc_server_handling_seconds_count", **GET_ME) == 2
    assert moved(before, after, "grpc_server_handling_seconds_bucket", **GET_ME, le="+Inf") == 2
    # Every handled call is in the histogram, whatever its code.
    handled = sum(
        v
        for (name, labels), v in after.items()
        if name == "grpc_server_handled_total" and set(GET_ME.items()) <= labels
    )
    assert value(after, "grpc_server_handling_seconds_count", **GET_ME) == handled
    # The second GetMe found the first one's verification in the token cache.
    assert moved(before, after, "luman_token_cache_hits_total") >= 1


def test_metrics_count_authentication_failures_by_reason(
    stub: auth_service_pb2_grpc.AuthServiceStub, metrics_url: str
) -> None:
    before = scrape(metrics_url)
    reason = refused_reason(stub, "not-a-token")
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetMe(auth_service_pb2.GetMeRequest())
    after = scrape(metrics_url)

    assert rich_error(missing.value).reason == "CREDENTIALS_MISSING"
    assert moved(before, after, "luman_authentication_failures_total", reason=reason) == 1
    assert (
        moved(before, after, "luman_authentication_failures_total", reason="CREDENTIALS_MISSING")
        == 1
    )
    assert (
        moved(before, after, "grpc_server_handled_total", **GET_ME, grpc_code="UNAUTHENTICATED")
        == 2
    )


def test_metrics_count_rate_limit_refusals_by_policy(
    stub: auth_service_pb2_grpc.AuthServiceStub, metrics_url: str
) -> None:
    token = register(stub).tokens.access_token
    before = scrape(metrics_url)
    for _ in range(3):
        get_me(stub, token)
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(token))
    after = scrape(metrics_url)

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert moved(before, after, "luman_rate_limit_refusals_total", policy="default") == 1
    assert moved(before, after, "luman_rate_limit_refusals_total", policy="auth") == 0
    assert (
        moved(before, after, "grpc_server_handled_total", **GET_ME, grpc_code="RESOURCE_EXHAUSTED")
        == 1
    )
    assert moved(before, after, "luman_authentication_failures_total", reason="RATE_LIMITED") == 0


def test_metrics_report_the_parts_state_at_scrape_time(
    stub: auth_service_pb2_grpc.AuthServiceStub, metered_app: App, metrics_url: str
) -> None:
    register(stub)
    assert metered_app.request_log is not None
    assert metered_app.request_log.flush(10)
    samples = scrape(metrics_url)

    assert value(samples, "luman_request_log_written_total") >= 1
    assert value(samples, "luman_request_log_queue_depth") == 0
    assert value(samples, "luman_request_log_dropped_total") == 0
    assert value(samples, "luman_request_log_failed_total") == 0
    assert ("luman_database_connections_in_use", frozenset()) in samples
    assert value(samples, "luman_password_hash_slots") >= 1
    assert value(samples, "luman_password_hash_slots_busy") == 0
    # The hasher is the session's: other tests may have shed calls on it.
    assert ("luman_password_hash_shed_total", frozenset()) in samples
    assert ("luman_token_cache_misses_total", frozenset()) in samples


def test_metrics_other_paths_on_metrics_port_are_not_found(metrics_url: str) -> None:
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        assert client.get(metrics_url.replace("/metrics", "/other")).status_code == 404


def test_metrics_port_in_use_fails_to_build(
    metrics_settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(BindError, match="METRICS_PORT"):
            build_server(
                dataclasses.replace(metrics_settings, metrics_port=port),
                sessions,
                clock=clock,
                hasher=hasher,
            )
