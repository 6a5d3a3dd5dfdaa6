"""TLS on the HTTP port: HTTPS with certificates the tests make, HSTS, a wrong CA, client
certificates (TLS_CLIENT_CA_FILE), and reloading the files."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.gateway import GatewayServer, build_gateway
from tests.gateway.helpers import access_token, bearer
from tests.support import FakeClock
from tests.tls_support import (
    Issued,
    Pki,
    issue,
    make_authority,
    make_pki,
    serial_of,
    with_tls,
)


@dataclasses.dataclass
class TlsGateway:
    app: App
    gateway: GatewayServer
    pki: Pki

    @property
    def url(self) -> str:
        return f"https://localhost:{self.gateway.port}"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "tls")


@pytest.fixture
def tls_settings(gateway_settings: Settings, pki: Pki) -> Settings:
    return with_tls(gateway_settings, pki.cert_file, pki.key_file, pki.ca_file)


@pytest.fixture
def tls_gateway(
    tls_settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher, pki: Pki
) -> Iterator[TlsGateway]:
    yield from _serve(tls_settings, sessions, clock, hasher, pki)


def _serve(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher, pki: Pki
) -> Iterator[TlsGateway]:
    app = build_server(settings, sessions, clock=clock, hasher=hasher)
    app.start()
    gateway = build_gateway(settings, sessions, app)
    gateway.start()
    yield TlsGateway(app, gateway, pki)
    gateway.stop(None)
    app.stop(None)


def _context(ca: bytes, client: Issued | None = None, folder: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.decode())
    if client is not None:
        assert folder is not None
        cert, key = client.write(folder, "client")
        context.load_cert_chain(cert, key)
    return context


def _https(ca: bytes, base_url: str) -> httpx.Client:
    # trust_env=False: an https_proxy in the environment must not capture loopback requests.
    return httpx.Client(base_url=base_url, verify=_context(ca), timeout=10.0, trust_env=False)


def _peer_serial(port: int, ca: bytes) -> int:
    context = _context(ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(der)


def test_https_calls_carry_hsts(tls_gateway: TlsGateway) -> None:
    with _https(tls_gateway.pki.ca.pem, tls_gateway.url) as http:
        health = http.get("/healthz")
        token = access_token(http)
        me = http.get("/auth/me", headers=bearer(token))
    assert health.status_code == 200
    assert me.status_code == 200, me.text
    for response in (health, me):
        assert response.headers["strict-transport-security"].startswith("max-age=31536000")


@pytest.mark.shape_check
def test_hsts_false_leaves_the_header_out(
    tls_settings: Settings,
    sessions: Sessions,
    clock: FakeClock,
    hasher: PasswordHasher,
    pki: Pki,
) -> None:
    settings = dataclasses.replace(tls_settings, hsts=False)
    for served in _serve(settings, sessions, clock, hasher, pki):
        with _https(pki.ca.pem, served.url) as http:
            response = http.get("/healthz")
        assert response.status_code == 200
        assert "strict-transport-security" not in response.headers


@pytest.mark.shape_check
def test_plain_http_has_no_hsts(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert "strict-transport-security" not in response.headers


@pytest.mark.shape_check
def test_certificate_from_another_ca_is_refused(tls_gateway: TlsGateway) -> None:
    other = make_authority("Someone Else's CA")
    with _https(other.pem, tls_gateway.url) as http, pytest.raises(httpx.ConnectError):
        http.get("/healthz")


@pytest.mark.shape_check
def test_client_certificates_are_optional_but_verified(tls_gateway: TlsGateway) -> None:
    pki = tls_gateway.pki
    signed = issue(pki.ca, common_name="billing", client=True)
    with httpx.Client(
        base_url=tls_gateway.url,
        verify=_context(pki.ca.pem, signed, pki.folder / "good"),
        timeout=10.0,
        trust_env=False,
    ) as http:
        assert http.get("/healthz").status_code == 200
    stranger = issue(make_authority("Someone Else's CA"), common_name="billing", client=True)
    with (
        httpx.Client(
            base_url=tls_gateway.url,
            verify=_context(pki.ca.pem, stranger, pki.folder / "bad"),
            timeout=10.0,
            trust_env=False,
        ) as http,
        pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
    ):
        http.get("/healthz")


@pytest.mark.shape_check
def test_reload_serves_new_certificate_to_new_connections_only(tls_gateway: TlsGateway) -> None:
    pki = tls_gateway.pki
    assert tls_gateway.app.tls is not None
    with _https(pki.ca.pem, tls_gateway.url) as kept:
        assert kept.get("/healthz").status_code == 200
        new_ca = make_authority("Luman Test CA 2")
        renewed = issue(new_ca)
        renewed.write(pki.folder)
        assert tls_gateway.app.tls.reload()

        assert _peer_serial(tls_gateway.gateway.port, new_ca.pem) == renewed.serial
        with _https(new_ca.pem, tls_gateway.url) as fresh:
            assert fresh.get("/healthz").status_code == 200
        # The kept-alive connection was set up before: it goes on with the old certificate.
        response = kept.get("/healthz")
        assert response.status_code == 200
        assert response.headers["strict-transport-security"].startswith("max-age=31536000")
