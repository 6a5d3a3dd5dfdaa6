"""uvicorn's httptools protocol, plus the verified TLS client certificate in each request's scope.

uvicorn leaves the ASGI TLS extension out. With TLS_CLIENT_CA_FILE the gateway's SSLContext
asks clients for a certificate (CERT_OPTIONAL: a presented one must verify, or the handshake
fails), and token authentication needs it to authenticate a service account by certificate
(auth/client_certificates.py). asyncio calls connection_made once the handshake is done, so the
certificate is read once per connection and copied into every request's scope as the extension
names it: scope["extensions"]["tls"]["client_cert_chain"], PEM strings, the client's first.
"""

from __future__ import annotations

import asyncio
import ssl

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class ClientCertificateHttpProtocol(HttpToolsProtocol):
    _client_cert_chain: list[str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        self._client_cert_chain = [ssl.DER_cert_to_PEM_cert(der)] if der else None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._client_cert_chain is not None:
            extensions = self.scope.setdefault("extensions", {})
            extensions["tls"] = {"client_cert_chain": self._client_cert_chain}
