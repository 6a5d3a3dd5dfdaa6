"""Certificates made by the tests (the `cryptography` package): a CA, server certificates for
127.0.0.1/localhost signed by it, an expired one, and another CA's; plus settings that point the
server at them."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from luman.server.config import Settings

_NOW = datetime.datetime.now(datetime.UTC)


@dataclasses.dataclass(frozen=True)
class Authority:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclasses.dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes
    serial: int

    def write(self, folder: Path, stem: str = "server") -> tuple[Path, Path]:
        """Write `<stem>.pem` and `<stem>.key` into `folder` (replacing them); returns both."""
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / f"{stem}.pem", folder / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


def make_authority(name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW - datetime.timedelta(days=1))
        .not_valid_after(_NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(name, key, cert)


def issue(
    authority: Authority,
    *,
    common_name: str = "localhost",
    expired: bool = False,
    client: bool = False,
    uris: tuple[str, ...] = (),
    not_after: datetime.datetime | None = None,
) -> Issued:
    """A leaf certificate signed by `authority`: a server one for localhost and 127.0.0.1, or a
    client one (with subject alternative name `uris`, if any); `expired` ended yesterday;
    `not_after` ends it then instead of in a week."""
    key = ec.generate_private_key(ec.SECP256R1())
    if expired:
        start, end = _NOW - datetime.timedelta(days=10), _NOW - datetime.timedelta(days=1)
    else:
        start, end = _NOW - datetime.timedelta(days=1), _NOW + datetime.timedelta(days=7)
    if not_after is not None:
        end = not_after
    serial = x509.random_serial_number()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
    )
    if client and uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri) for uri in uris]),
            critical=False,
        )
    if not client:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(authority.key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), key_pem, serial)


def serial_of(pem_or_der: bytes) -> int:
    """The serial number of a PEM or DER certificate."""
    if pem_or_der.startswith(b"-----"):
        return x509.load_pem_x509_certificate(pem_or_der).serial_number
    return x509.load_der_x509_certificate(pem_or_der).serial_number


def with_tls(settings: Settings, cert: Path, key: Path, client_ca: Path | None = None) -> Settings:
    return dataclasses.replace(
        settings,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
        tls_client_ca_file=str(client_ca) if client_ca else "",
    )


@dataclasses.dataclass
class Pki:
    """A CA (its certificate in `ca_file`) and a server certificate it issued, written to
    `cert_file` and `key_file` in `folder`."""

    folder: Path
    ca: Authority
    ca_file: Path
    server: Issued
    cert_file: Path
    key_file: Path


def make_pki(folder: Path) -> Pki:
    """A fresh CA and a server certificate for 127.0.0.1 and localhost, written in `folder`."""
    ca = make_authority("Luman Test CA")
    folder.mkdir()
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.pem)
    server = issue(ca)
    cert_file, key_file = server.write(folder)
    return Pki(folder, ca, ca_file, server, cert_file, key_file)
