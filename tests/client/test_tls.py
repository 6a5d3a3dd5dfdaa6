"""grpcs:// addresses: TLS with a CA bundle, the token sent over it, and a failed handshake."""

from __future__ import annotations

import grpc
import pytest

from luman.client import Client, Unavailable
from tests.client.tls import Certificate, TlsServer, certificate, tls_server

__all__ = ["certificate", "tls_server"]  # fixtures, used by name


def test_grpcs_with_ca_bundle_sends_the_token_over_tls(
    tls_server: TlsServer, certificate: Certificate
) -> None:
    seen: list[str] = []

    def record(context: grpc.ServicerContext) -> None:
        seen.extend(str(v) for k, v in context.invocation_metadata() if k == "authorization")

    tls_server.auth.behaviour = record
    address = f"grpcs://localhost:{tls_server.port}"
    with Client(address, token="lmn_secret", root_certificates=certificate.cert) as client:
        assert client.check_health() == "SERVING"
        assert client.auth.get_me().email == "scripted@example.com"
    assert seen == ["Bearer lmn_secret"]


def test_grpcs_with_untrusted_certificate_is_unavailable(tls_server: TlsServer) -> None:
    with Client(f"grpcs://localhost:{tls_server.port}") as client, pytest.raises(Unavailable):
        client.check_health()


def test_plaintext_client_against_tls_server_is_unavailable(tls_server: TlsServer) -> None:
    with Client(f"localhost:{tls_server.port}") as client, pytest.raises(Unavailable):
        client.check_health()
