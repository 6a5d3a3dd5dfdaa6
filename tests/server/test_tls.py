"""TLS on the gRPC port: real TLS channels with certificates the tests make, the client and the
CLI over grpcs://, a wrong CA, an expired certificate, and reloading the files (SIGHUP)."""

from __future__ import annotations

import logging
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.cli.main import cli
from luman.client import Client
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.tls import ServerCertificates, TlsError
from tests.serve_process import free_port, serve_env, serving
from tests.support import PASSWORD, FakeClock, unique_email
from tests.tls_support import (
    Pki,
    issue,
    make_authority,
    make_pki,
    serial_of,
    with_tls,
)

START_TIMEOUT = 30  # seconds: only a broken test waits this long


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "tls")


@pytest.fixture
def tls_app(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher, pki: Pki
) -> Iterator[App]:
    app = build_server(
        with_tls(settings, pki.cert_file, pki.key_file), sessions, clock=clock, hasher=hasher
    )
    app.start()
    yield app
    app.stop(None)


def _secure_channel(port: int, ca: bytes) -> grpc.Channel:
    return grpc.secure_channel(
        f"localhost:{port}", grpc.ssl_channel_credentials(root_certificates=ca)
    )


def _health(channel: grpc.Channel) -> int:
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )
    return int(response.status)


def _peer_serial(port: int, ca: bytes) -> int:
    """The serial number of the certificate a new TLS connection to the port is shown."""
    context = ssl.create_default_context(cadata=ca.decode())
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return serial_of(der)


def test_register_and_get_me_over_tls(tls_app: App, pki: Pki) -> None:
    email = unique_email()
    with _secure_channel(tls_app.port, pki.ca.pem) as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        registered = stub.Register(
            auth_service_pb2.RegisterRequest(email=email, password=PASSWORD, name="Ada"),
            timeout=10,
        )
        me = stub.GetMe(
            auth_service_pb2.GetMeRequest(),
            metadata=(("authorization", f"Bearer {registered.tokens.access_token}"),),
            timeout=10,
        )
    assert me.user.email == email


@pytest.mark.shape_check
def test_tls_port_refuses_plaintext(tls_app: App) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{tls_app.port}") as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        _health(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.shape_check
def test_certificate_from_another_ca_is_refused(tls_app: App) -> None:
    other = make_authority("Someone Else's CA")
    with (
        _secure_channel(tls_app.port, other.pem) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        _health(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.shape_check
def test_expired_server_certificate_is_refused(
    settings: Settings, sessions: Sessions, hasher: PasswordHasher, pki: Pki
) -> None:
    cert, key = issue(pki.ca, expired=True).write(pki.folder, "expired")
    app = build_server(with_tls(settings, cert, key), sessions, hasher=hasher)
    app.start()
    try:
        with (
            _secure_channel(app.port, pki.ca.pem) as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            _health(channel)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        app.stop(None)


def test_client_over_grpcs_with_ca(tls_app: App, pki: Pki) -> None:
    email = unique_email()
    address = f"grpcs://localhost:{tls_app.port}"
    with Client(address, root_certificates=pki.ca.pem) as client:
        assert client.check_health() == "SERVING"
        signed_in = client.auth.register(email, PASSWORD, "Ada")
        client.token = signed_in.tokens.access_token
        assert client.auth.get_me().email == email


def test_cli_over_grpcs_with_ca_cert(tls_app: App, pki: Pki, tmp_path: Path) -> None:
    email = unique_email()
    env: dict[str, str | None] = {
        "LUMAN_CONFIG_DIR": str(tmp_path / ".luman"),
        "LUMAN_API_URL": None,
        "LUMAN_TIMEOUT": None,
        "LUMAN_CA_CERT": None,
    }
    prefix = ["--api-url", f"grpcs://localhost:{tls_app.port}", "--ca-cert", str(pki.ca_file)]
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [*prefix, "register", "--email", email, "--name", "Ada", "--password-stdin"],
        input=PASSWORD,
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, [*prefix, "whoami"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert email in result.output
    # Without the CA the handshake fails: "unreachable" (exit code 4).
    result = runner.invoke(cli, [*prefix[:2], "whoami"], env=env, catch_exceptions=False)
    assert result.exit_code == 4, result.output


@pytest.mark.shape_check
def test_reload_serves_new_certificate_to_new_connections_only(tls_app: App, pki: Pki) -> None:
    """After the files change and reload() runs, a new connection gets the new certificate (from
    a new CA here), while a channel opened before keeps working on its connection."""
    assert tls_app.tls is not None
    old = _secure_channel(tls_app.port, pki.ca.pem)
    try:
        assert _health(old) == health_pb2.HealthCheckResponse.SERVING
        new_ca = make_authority("Luman Test CA 2")
        renewed = issue(new_ca)
        renewed.write(pki.folder)
        assert tls_app.tls.reload()

        assert _peer_serial(tls_app.port, new_ca.pem) == renewed.serial
        with _secure_channel(tls_app.port, new_ca.pem) as fresh:
            assert _health(fresh) == health_pb2.HealthCheckResponse.SERVING
        with _secure_channel(tls_app.port, pki.ca.pem) as stale, pytest.raises(grpc.RpcError):
            _health(stale)  # the old CA does not sign the new certificate
        assert _health(old) == health_pb2.HealthCheckResponse.SERVING
    finally:
        old.close()


@pytest.mark.shape_check
def test_failed_reload_keeps_the_old_certificate(
    tls_app: App, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    assert tls_app.tls is not None
    pki.cert_file.write_bytes(b"not a certificate")
    with caplog.at_level(logging.ERROR, logger="luman.server.tls"):
        assert not tls_app.tls.reload()
    assert "TLS certificates not reloaded" in caplog.text
    assert _peer_serial(tls_app.port, pki.ca.pem) == pki.server.serial
    # A key that does not match the certificate is refused too.
    pki.cert_file.write_bytes(issue(pki.ca).cert_pem)
    assert not tls_app.tls.reload()
    assert _peer_serial(tls_app.port, pki.ca.pem) == pki.server.serial


def test_client_ca_does_not_require_client_certificates(
    settings: Settings, sessions: Sessions, hasher: PasswordHasher, pki: Pki
) -> None:
    app = build_server(
        with_tls(settings, pki.cert_file, pki.key_file, pki.ca_file), sessions, hasher=hasher
    )
    app.start()
    try:
        with _secure_channel(app.port, pki.ca.pem) as channel:
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
    finally:
        app.stop(None)


def test_unreadable_files_fail_the_start(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(TlsError):
        ServerCertificates(str(tmp_path / "missing.pem"), str(pki.key_file))
    with pytest.raises(TlsError):
        ServerCertificates(str(pki.cert_file), str(pki.cert_file))  # not a key


@pytest.mark.slow
def test_serve_reloads_on_sighup(tmp_path: Path, database_url: str, pki: Pki) -> None:
    """`luman-server serve` with TLS: SIGHUP makes new connections see the new certificate
    while a channel opened before keeps working."""
    port = free_port()
    env = serve_env(
        tmp_path,
        database_url,
        port,
        TLS_CERT_FILE=str(pki.cert_file),
        TLS_KEY_FILE=str(pki.key_file),
    )
    with serving(tmp_path, env) as process:
        old = _secure_channel(port, pki.ca.pem)
        try:
            try:
                grpc.channel_ready_future(old).result(timeout=START_TIMEOUT)
            except grpc.FutureTimeoutError:
                process.kill()
                raise AssertionError(f"no TLS server: {process.communicate()[1]}") from None
            assert _health(old) == health_pb2.HealthCheckResponse.SERVING
            renewed = issue(pki.ca)
            renewed.write(pki.folder)
            process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + START_TIMEOUT
            while _peer_serial(port, pki.ca.pem) != renewed.serial:
                assert process.poll() is None, "server exited on SIGHUP"
                assert time.monotonic() < deadline, "certificate not reloaded"
                time.sleep(0.05)  # polling interval: the handler runs on the main thread
            assert _health(old) == health_pb2.HealthCheckResponse.SERVING
        finally:
            old.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "serving gRPC over TLS" in stderr
    assert "received SIGHUP: reloading the TLS certificates" in stderr
    assert "TLS certificates reloaded" in stderr


@pytest.mark.slow
def test_sighup_without_tls_changes_nothing(tmp_path: Path, database_url: str) -> None:
    """`systemctl reload` on a plaintext server: logged, and the server keeps serving (SIGHUP's
    default action would end it without draining, and systemd would not restart it)."""
    port = free_port()
    with serving(tmp_path, serve_env(tmp_path, database_url, port)) as process:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
            except grpc.FutureTimeoutError:
                process.kill()
                raise AssertionError(f"no server: {process.communicate()[1]}") from None
            process.send_signal(signal.SIGHUP)
            time.sleep(1.0)  # the main thread acts on it within half a second
            assert process.poll() is None, "server exited on SIGHUP"
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "received SIGHUP: nothing to reload" in stderr
