"""Fixtures for the HTTP gateway: the real gRPC app plus the gateway on a free loopback port."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import httpx
import pytest

from luman.server.app import App
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.gateway import GatewayServer, build_gateway

ALLOWED_ORIGIN = "https://app.example.com"


@pytest.fixture
def gateway_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings, http_port=0, cors_origin=f"{ALLOWED_ORIGIN}, https://admin.example.com"
    )


@pytest.fixture
def gateway(gateway_settings: Settings, sessions: Sessions, app: App) -> Iterator[GatewayServer]:
    """The gateway in front of the `app` fixture's gRPC server, on 127.0.0.1:<free port>."""
    server = build_gateway(gateway_settings, sessions, app)
    server.start()
    yield server
    server.stop(None)


@pytest.fixture
def http(gateway: GatewayServer) -> Iterator[httpx.Client]:
    # trust_env=False: an http_proxy in the environment must not capture loopback requests.
    with httpx.Client(
        base_url=f"http://127.0.0.1:{gateway.port}", timeout=10.0, trust_env=False
    ) as client:
        yield client
