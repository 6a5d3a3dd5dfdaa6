"""Prometheus metrics on the HTTP port: served there by default, on METRICS_PORT instead when
it is set, nowhere with METRICS_ENABLED=false; HTTP calls count like gRPC ones."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import httpx

from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.gateway import GatewayServer, build_gateway
from tests.gateway.helpers import access_token, bearer, error_of
from tests.metrics_support import GET_ME, moved, scrape, value
from tests.support import FakeClock


def test_gateway_serves_metrics_and_counts_http_calls(
    http: httpx.Client, gateway: GatewayServer
) -> None:
    url = f"http://127.0.0.1:{gateway.port}/metrics"
    token = access_token(http)
    before = scrape(url)
    assert http.get("/auth/me", headers=bearer(token)).status_code == 200
    refused = http.get("/auth/me", headers=bearer("not-a-token"))
    after = scrape(url)

    # The gateway calls the server's chain in process: its calls are the same series.
    assert moved(before, after, "grpc_server_handled_total", **GET_ME, grpc_code="OK") == 1
    assert (
        moved(before, after, "grpc_server_handled_total", **GET_ME, grpc_code="UNAUTHENTICATED")
        == 1
    )
    assert moved(before, after, "grpc_server_handling_seconds_count", **GET_ME) == 2
    reason = error_of(refused).reason
    assert moved(before, after, "luman_authentication_failures_total", reason=reason) == 1
    assert http.post("/metrics").status_code == 405


@contextlib.contextmanager
def _serving(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[tuple[App, GatewayServer]]:
    app = build_server(settings, sessions, clock=clock, hasher=hasher)
    app.start()
    try:
        gateway = build_gateway(settings, sessions, app)
        gateway.start()
        try:
            yield app, gateway
        finally:
            gateway.stop(None)
    finally:
        app.stop(None)


def test_metrics_port_serves_metrics_off_the_http_port(
    gateway_settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    settings = dataclasses.replace(gateway_settings, metrics_port=0)
    with (
        _serving(settings, sessions, clock, hasher) as (app, gateway),
        httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", trust_env=False) as http,
    ):
        assert app.metrics_listener is not None
        assert app.metrics_listener.port not in (0, gateway.port)
        token = access_token(http)
        assert http.get("/auth/me", headers=bearer(token)).status_code == 200

        assert http.get("/metrics").status_code == 404
        samples = scrape(f"http://127.0.0.1:{app.metrics_listener.port}/metrics")
        assert value(samples, "grpc_server_handled_total", **GET_ME, grpc_code="OK") == 1
    # Stopped with the app.
    with httpx.Client(trust_env=False) as client:
        try:
            client.get(f"http://127.0.0.1:{app.metrics_listener.port}/metrics", timeout=2)
        except httpx.TransportError:
            pass
        else:
            raise AssertionError("the metrics port still answers after stop()")


def test_metrics_disabled_serves_nothing(
    gateway_settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    settings = dataclasses.replace(gateway_settings, metrics_enabled=False, metrics_port=0)
    with (
        _serving(settings, sessions, clock, hasher) as (app, gateway),
        httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", trust_env=False) as http,
    ):
        assert app.metrics is None
        assert app.metrics_listener is None
        token = access_token(http)
        assert http.get("/auth/me", headers=bearer(token)).status_code == 200
        assert http.get("/metrics").status_code == 404
