"""TLS for both ports: the certificate files (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE)
read once at start and again on `reload()` (SIGHUP, main.py).

A reload never drops a connection: both servers pick the files up at the next handshake.
gRPC asks `_fetch()` on every new handshake (grpc.dynamic_ssl_server_credentials) and gets the
new configuration once after each reload. The HTTP gateway's SSLContext has an SNI callback
(OpenSSL calls it on every handshake, SNI or not) that moves the new connection onto the
context of the latest reload. Connections already open keep the certificate they started with.
A reload that fails (a missing file, a key that does not match) keeps the old files in use and
logs an error.

Client certificates (TLS_CLIENT_CA_FILE): the HTTP port requests one and verifies it against
the CA when presented, without requiring it. grpcio's Python API can only require client
certificates or not ask for them (server_credentials_ssl_dynamic_cert_config), and requiring
would lock out every caller without one (the CLI, browsers' services), so the gRPC port does
not ask; MTLS_PORT, when set, is a second gRPC port on the same server that requires one.
A verified certificate authenticates a call that carries no bearer token as the service account
it names (auth/client_certificates.py).
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
import threading
from pathlib import Path

import grpc

logger = logging.getLogger(__name__)


class TlsError(Exception):
    """The certificate files cannot be read or do not form a usable TLS configuration."""


@dataclasses.dataclass(frozen=True)
class _Loaded:
    grpc_config: grpc.ServerCertificateConfiguration
    ssl_context: ssl.SSLContext
    # The same key pair with the client CA, for MTLS_PORT; None without TLS_CLIENT_CA_FILE.
    grpc_mtls_config: grpc.ServerCertificateConfiguration | None


class ServerCertificates:
    """The current certificate files of both ports.

    Raises:
        TlsError: the files cannot be loaded (on construction).
    """

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self._cert_file = Path(cert_file)
        self._key_file = Path(key_file)
        self._client_ca_file = Path(client_ca_file) if client_ca_file else None
        self._lock = threading.Lock()
        self._current = self._load()
        self._generation = 0
        # Per gRPC port: the reload generation its fetcher last handed to grpcio.
        self._fetched_generation = {"plain": 0, "mtls": 0}
        # What the gateway serves: every handshake moves onto the current reload's context.
        self._http_context = self._current.ssl_context
        self._http_context.sni_callback = self._choose_context

    @property
    def client_ca(self) -> bool:
        return self._client_ca_file is not None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Credentials for add_secure_port that follow every reload."""
        return grpc.dynamic_ssl_server_credentials(
            self._current.grpc_config,
            # The stubs say the fetcher always returns a configuration; grpcio takes None as
            # "unchanged" (_server_cert_config_fetcher_wrapper in credentials.pyx.pxi).
            lambda: self._fetch("plain"),  # type: ignore[arg-type,return-value]
            require_client_authentication=False,
        )

    def grpc_mtls_credentials(self) -> grpc.ServerCredentials:
        """Credentials for MTLS_PORT: a client certificate signed by TLS_CLIENT_CA_FILE is
        required (the handshake fails without one). Follows every reload.

        Raises:
            TlsError: there is no TLS_CLIENT_CA_FILE.
        """
        if self._current.grpc_mtls_config is None:
            raise TlsError("MTLS_PORT needs TLS_CLIENT_CA_FILE")
        return grpc.dynamic_ssl_server_credentials(
            self._current.grpc_mtls_config,
            lambda: self._fetch("mtls"),  # type: ignore[arg-type,return-value]
            require_client_authentication=True,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The SSLContext the HTTP gateway serves with; it follows every reload."""
        return self._http_context

    def reload(self) -> bool:
        """Read the files again for the next handshakes on both ports.

        Returns:
            True when the new files are in use; False when they could not be loaded (logged),
            in which case the previous ones stay.
        """
        try:
            loaded = self._load()
        except TlsError as exc:
            logger.error("TLS certificates not reloaded, keeping the previous ones: %s", exc)
            return False
        with self._lock:
            self._current = loaded
            self._generation += 1
        logger.info("TLS certificates reloaded from %s", self._cert_file)
        return True

    def _fetch(self, port: str) -> grpc.ServerCertificateConfiguration | None:
        # Called by grpcio on each new handshake; None means "unchanged".
        with self._lock:
            if self._fetched_generation[port] == self._generation:
                return None
            self._fetched_generation[port] = self._generation
            if port == "mtls":
                return self._current.grpc_mtls_config
            return self._current.grpc_config

    def _choose_context(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None, _: object
    ) -> None:
        current = self._current.ssl_context
        if current is not connection.context:
            connection.context = current

    def _load(self) -> _Loaded:
        try:
            cert = self._cert_file.read_bytes()
            key = self._key_file.read_bytes()
            client_ca = self._client_ca_file.read_bytes() if self._client_ca_file else None
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            # Checks that the key belongs to the certificate. An encrypted key is refused
            # instead of OpenSSL asking for its passphrase on the terminal.
            context.load_cert_chain(self._cert_file, self._key_file, password=_no_passphrase)
            # gRPC gets the bytes read above: they must be the pair just checked (files being
            # replaced one after the other, mid-reload, would hand it a mismatched pair).
            if (self._cert_file.read_bytes(), self._key_file.read_bytes()) != (cert, key):
                raise TlsError("the files changed while they were read; try again")
            if client_ca is not None:
                context.load_verify_locations(cadata=client_ca.decode("ascii"))
                context.verify_mode = ssl.CERT_OPTIONAL
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise TlsError(
                f"cannot load TLS_CERT_FILE/TLS_KEY_FILE/TLS_CLIENT_CA_FILE: {exc}"
            ) from exc
        grpc_config = grpc.ssl_server_certificate_configuration([(key, cert)])
        mtls_config = None
        if client_ca is not None:
            mtls_config = grpc.ssl_server_certificate_configuration(
                [(key, cert)], root_certificates=client_ca
            )
        return _Loaded(grpc_config, context, mtls_config)


def _no_passphrase() -> str:
    raise ValueError("TLS_KEY_FILE is encrypted: give an unencrypted key (mode 0600)")
