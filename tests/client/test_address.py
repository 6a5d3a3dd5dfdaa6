"""Backend address parsing: host:port, grpc:// and grpcs:// forms."""

from __future__ import annotations

import pytest

from luman.client import Address, InvalidAddress, parse_address


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("localhost:3000", Address("localhost", 3000), "localhost:3000"),
        ("localhost", Address("localhost", 3000), "localhost:3000"),
        (" 127.0.0.1:50051 ", Address("127.0.0.1", 50051), "127.0.0.1:50051"),
        ("grpc://api.example.com:8443", Address("api.example.com", 8443), "api.example.com:8443"),
        ("grpc://api.example.com/", Address("api.example.com", 3000), "api.example.com:3000"),
        ("grpcs://api.example.com", Address("api.example.com", 443, tls=True), None),
        ("GRPCS://API.example.com:9443", Address("api.example.com", 9443, tls=True), None),
        ("[::1]:3000", Address("::1", 3000), "[::1]:3000"),
        ("grpcs://[2001:db8::1]", Address("2001:db8::1", 443, tls=True), None),
    ],
)
def test_parse_accepted_forms(text: str, expected: Address, canonical: str | None) -> None:
    address = parse_address(text)
    assert address == expected
    if canonical is not None:
        assert str(address) == canonical
    assert parse_address(str(address)) == address


def test_tls_address_renders_with_scheme_and_target() -> None:
    address = parse_address("grpcs://[2001:db8::1]:9443")
    assert str(address) == "grpcs://[2001:db8::1]:9443"
    assert address.target == "[2001:db8::1]:9443"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "http://localhost:3000",
        "https://api.example.com",
        "localhost:notaport",
        "localhost:99999",
        "localhost:0",
        "grpc://user@host:1",
        "grpc://host:1/path",
        "grpc://host:1?x=1",
        "grpc://:3000",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidAddress):
        parse_address(text)
