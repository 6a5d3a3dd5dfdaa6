"""Backend addresses: "host:port", "grpc://host:port" (plaintext) or "grpcs://host[:port]" (TLS)."""

from __future__ import annotations

import dataclasses
import urllib.parse

from luman.client.errors import InvalidAddress

DEFAULT_ADDRESS = "localhost:3000"
DEFAULT_PORT = 3000  # the server's PORT default
DEFAULT_TLS_PORT = 443

_SCHEMES = {"grpc": False, "grpcs": True}


@dataclasses.dataclass(frozen=True)
class Address:
    """A parsed backend address. `str(address)` gives it back in canonical form."""

    host: str
    port: int
    tls: bool = False

    @property
    def target(self) -> str:
        """The gRPC target, "host:port", with brackets around an IPv6 host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"grpcs://{self.target}" if self.tls else self.target


def parse_address(value: str | Address) -> Address:
    """Parse "host:port", "host", "grpc://host:port" or "grpcs://host[:port]".

    Without a port, plaintext addresses use 3000 (the server's default) and grpcs uses 443.

    Raises:
        InvalidAddress: the value is none of those forms.
    """
    if isinstance(value, Address):
        return value
    text = value.strip()
    if not text:
        raise InvalidAddress("the backend address is empty")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "grpc", text
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise InvalidAddress(
            f"unsupported address {value!r}: use host:port, grpc://host:port or grpcs://host:port"
        )
    tls = _SCHEMES[scheme]
    try:
        parts = urllib.parse.urlsplit(f"//{rest}")
        port = parts.port
    except ValueError:
        raise InvalidAddress(f"invalid port in address {value!r}") from None
    if (
        not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise InvalidAddress(
            f"invalid address {value!r}: expected host:port, grpc://host:port or grpcs://host:port"
        )
    if port == 0:
        raise InvalidAddress(f"invalid port in address {value!r}")
    default_port = DEFAULT_TLS_PORT if tls else DEFAULT_PORT
    return Address(host=parts.hostname, port=port or default_port, tls=tls)
