"""Web-security policy of the gateway: security headers, CORS, and who the client is.

Security headers are Helmet's defaults (what the seed's Express app sent), tightened for a JSON
API: frames are denied outright and the CSP allows nothing, since no response is ever meant to
be rendered as a page. Responses also say `Cache-Control: no-store`: they carry tokens and
personal data that no shared cache may keep.

Strict-Transport-Security is sent only on requests that arrived over TLS: uvicorn reports
scheme "https", or a proxy listed in TRUSTED_PROXIES says `X-Forwarded-Proto: https`. On plain
HTTP it would be ignored by browsers anyway, and on a proxy-less localhost it would pin the
name to HTTPS for a year.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from luman.interceptors import metadata_keys
from luman.interceptors.client_address import IPAddress, IPNetwork, forwarded_client

Header = tuple[bytes, bytes]

SECURITY_HEADERS: tuple[Header, ...] = (
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"origin-agent-cluster", b"?1"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-dns-prefetch-control", b"off"),
    (b"x-download-options", b"noopen"),
    (b"x-frame-options", b"DENY"),
    (b"x-permitted-cross-domain-policies", b"none"),
    (b"x-xss-protection", b"0"),
    (b"cache-control", b"no-store"),
)
HSTS: Header = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")

# The device approval page (device_page.py) is the one HTML the gateway serves: the same
# headers, with a CSP that lets it load its own stylesheet and post its own forms, nothing else,
# and Referrer-Policy same-origin: the code in its URL reaches no other site, while its own form
# posts carry its Origin (with no-referrer, browsers send `Origin: null`, which proves nothing).
PAGE_CSP = (
    b"default-src 'none'; style-src 'self'; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)
_PAGE_OVERRIDES = {b"content-security-policy": PAGE_CSP, b"referrer-policy": b"same-origin"}
PAGE_SECURITY_HEADERS: tuple[Header, ...] = tuple(
    (name, _PAGE_OVERRIDES.get(name, value)) for name, value in SECURITY_HEADERS
)

# Request headers a browser may send cross-origin; the rest of the API needs nothing else.
CORS_ALLOW_HEADERS = b"authorization, content-type"
# Response headers a cross-origin script may read besides the CORS-safelisted ones.
CORS_EXPOSE_HEADERS = ", ".join(sorted(metadata_keys.RATE_LIMIT_HEADERS)).encode()
CORS_MAX_AGE_SECONDS = 600
VARY_ORIGIN: Header = (b"vary", b"Origin")


class CorsPolicy:
    """Origins allowed by CORS_ORIGIN: a comma-separated list of origins, or `*` for any.

    Bearer tokens travel in the Authorization header, never in cookies, so credentialed CORS
    (Access-Control-Allow-Credentials) is never needed, and `*` is safe to offer.
    """

    def __init__(self, setting: str) -> None:
        origins = [o.strip().rstrip("/").lower() for o in setting.split(",") if o.strip()]
        self.any_origin = "*" in origins
        self.origins = frozenset(o for o in origins if o != "*")

    def allowed(self, origin: str | None) -> bool:
        if not origin:
            return False
        return self.any_origin or origin.rstrip("/").lower() in self.origins

    def response_headers(self, origin: str | None) -> list[Header]:
        """Headers for an actual (non-preflight) response."""
        if not origin or not self.allowed(origin):
            return []
        return [
            (b"access-control-allow-origin", self._allow_origin(origin)),
            (b"access-control-expose-headers", CORS_EXPOSE_HEADERS),
        ]

    def preflight_headers(self, origin: str | None, methods: Sequence[str]) -> list[Header]:
        """Headers for an OPTIONS preflight; none (so the browser refuses) for other origins."""
        if not origin or not self.allowed(origin):
            return []
        return [
            (b"access-control-allow-origin", self._allow_origin(origin)),
            (b"access-control-allow-methods", ", ".join(methods).encode()),
            (b"access-control-allow-headers", CORS_ALLOW_HEADERS),
            (b"access-control-max-age", str(CORS_MAX_AGE_SECONDS).encode()),
        ]

    def _allow_origin(self, origin: str) -> bytes:
        return b"*" if self.any_origin else origin.encode("latin-1")


def _parse_ip(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d
    return address


class ClientAddress:
    """Works out the client's IP and scheme, believing X-Forwarded-* only from trusted proxies
    (TRUSTED_PROXIES), with the same rules as the gRPC side (luman.interceptors.caller)."""

    def __init__(self, trusted: Sequence[IPNetwork]) -> None:
        self._trusted = tuple(trusted)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The first address, walking X-Forwarded-For from the right, that is not a trusted
        proxy. Entries left of it were written by the client and prove nothing."""
        return forwarded_client(peer, [forwarded_for] if forwarded_for else [], self._trusted)

    def is_https(self, scheme: str, peer: str, forwarded_proto: str | None) -> bool:
        if scheme == "https":
            return True
        if not forwarded_proto:
            return False
        address = _parse_ip(peer)
        if address is None or not any(address in network for network in self._trusted):
            return False
        # The nearest proxy's value (the last one) is the one that saw the connection.
        return forwarded_proto.split(",")[-1].strip().lower() == "https"
