"""TLS fixtures: a throwaway self-signed certificate (openssl) and a grpcs server using it."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from luman.auth.v1 import auth_service_pb2_grpc
from tests.client.conftest import ScriptedAuthServicer


@dataclasses.dataclass(frozen=True)
class Certificate:
    cert: bytes
    key: bytes
    cert_path: Path


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return Certificate(cert.read_bytes(), key.read_bytes(), cert)


@dataclasses.dataclass
class TlsServer:
    port: int
    auth: ScriptedAuthServicer


@pytest.fixture
def tls_server(certificate: Certificate) -> Iterator[TlsServer]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    auth = ScriptedAuthServicer()  # type: ignore[abstract]
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(auth, server)
    credentials = grpc.ssl_server_credentials([(certificate.key, certificate.cert)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield TlsServer(port, auth)
    server.stop(None)
