"""TLS client certificates as service-account credentials (TLS_CLIENT_CA_FILE, MTLS_PORT): real
TLS channels and HTTPS connections with certificates the tests make. A certificate naming a
service account calls as that account on the gRPC MTLS_PORT and on the HTTP port; what it may
call is the account's; the plain gRPC port never asks; certificates that name nothing, another
CA's, an expired one, or a deleted account's are refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import sqlalchemy as sa

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_pb2, organization_service_pb2
from luman.organization.v1 import organization_service_pb2_grpc as org_grpc
from luman.server.app import App, build_server
from luman.server.auth.client_certificates import SAN_URI_PREFIX
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import ConfigError, Settings
from luman.server.db.models import RequestLog
from luman.server.db.session import Sessions
from luman.server.gateway import GatewayServer, build_gateway
from tests.gateway.helpers import error_of as http_error_of
from tests.server.organization_support import Account, create_organization, error_of, sign_up
from tests.support import FakeClock
from tests.tls_support import Authority, Issued, Pki, issue, make_authority, make_pki, with_tls

AuthStub = auth_service_pb2_grpc.AuthServiceStub


@dataclasses.dataclass
class Servers:
    app: App
    gateway: GatewayServer
    pki: Pki
    folder: Path

    @property
    def mtls_port(self) -> int:
        assert self.app.mtls_port is not None
        return self.app.mtls_port

    def channel(self, client: Issued | None, port: int | None = None) -> grpc.Channel:
        """A TLS channel to MTLS_PORT (or `port`), presenting `client` if given."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.pki.ca.pem,
            private_key=client.key_pem if client else None,
            certificate_chain=client.cert_pem if client else None,
        )
        return grpc.secure_channel(f"localhost:{port or self.mtls_port}", credentials)

    def https(self, client: Issued | None) -> httpx.Client:
        context = ssl.create_default_context(cadata=self.pki.ca.pem.decode())
        if client is not None:
            cert, key = client.write(self.folder, f"client-{uuid.uuid4().hex[:8]}")
            context.load_cert_chain(cert, key)
        return httpx.Client(
            base_url=f"https://localhost:{self.gateway.port}",
            verify=context,
            timeout=10.0,
            trust_env=False,
        )


# Six calls per address in the default policy's window: anything counted per address
# (anonymous calls) runs out at once; introspection by a service account has its own budget.
PER_ADDRESS_LIMIT = 6


@pytest.fixture
def servers(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher, tmp_path: Path
) -> Iterator[Servers]:
    pki = make_pki(tmp_path / "tls")
    tls_settings = dataclasses.replace(
        with_tls(settings, pki.cert_file, pki.key_file, pki.ca_file),
        mtls_port=0,
        http_port=0,
        rate_limit_max_requests=PER_ADDRESS_LIMIT,
    )
    app = build_server(tls_settings, sessions, clock=clock, hasher=hasher)
    app.start()
    gateway = build_gateway(tls_settings, sessions, app)
    gateway.start()
    yield Servers(app, gateway, pki, tmp_path)
    gateway.stop(None)
    app.stop(None)


@pytest.fixture
def stubs(servers: Servers) -> Iterator[tuple[AuthStub, org_grpc.OrganizationServiceStub]]:
    """Users' stubs on the ordinary gRPC port: TLS, no client certificate."""
    with servers.channel(None, servers.app.port) as channel:
        yield AuthStub(channel), org_grpc.OrganizationServiceStub(channel)


def _service_account(
    orgs: org_grpc.OrganizationServiceStub, owner: Account, scopes: tuple[str, ...]
) -> str:
    return _organization_and_account(orgs, owner, scopes)[1]


def _organization_and_account(
    orgs: org_grpc.OrganizationServiceStub, owner: Account, scopes: tuple[str, ...]
) -> tuple[organization_pb2.Organization, str]:
    """A new organization of `owner`'s and a service account in it (its id)."""
    organization = create_organization(orgs, owner)
    created = orgs.CreateServiceAccount(
        organization_service_pb2.CreateServiceAccountRequest(
            slug=organization.slug, name="billing", scopes=scopes
        ),
        metadata=owner.metadata,
    )
    account_id: str = created.service_account.id
    return organization, account_id


def _certificate(authority: Authority, account_id: str, **kwargs: object) -> Issued:
    return issue(
        authority,
        common_name="billing",
        client=True,
        uris=(f"{SAN_URI_PREFIX}{account_id}",),
        **kwargs,  # type: ignore[arg-type]
    )


def _introspect(auth: AuthStub, token: str) -> auth_service_pb2.IntrospectTokenResponse:
    response: auth_service_pb2.IntrospectTokenResponse = auth.IntrospectToken(
        auth_service_pb2.IntrospectTokenRequest(token=token), timeout=10
    )
    return response


def test_a_certificate_naming_a_service_account_calls_as_it_on_both_ports(
    servers: Servers, stubs: tuple[AuthStub, org_grpc.OrganizationServiceStub], sessions: Sessions
) -> None:
    auth, orgs = stubs
    owner = sign_up(auth)
    account_id = _service_account(orgs, owner, ("introspect",))
    certificate = _certificate(servers.pki.ca, account_id)
    # gRPC, MTLS_PORT: no token at all; the certificate is the credential.
    with servers.channel(certificate) as channel:
        introspected = _introspect(AuthStub(channel), owner.token)
        assert introspected.active
        assert introspected.subject == owner.id
        # A service account's principal: RPCs that act for a user are refused.
        refused = error_of(lambda: AuthStub(channel).GetMe(auth_service_pb2.GetMeRequest()))
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "USER_REQUIRED",
        )
    # HTTPS: the same certificate on the HTTP port.
    with servers.https(certificate) as http:
        response = http.post("/auth/introspect", json={"token": owner.token})
        assert response.status_code == 200, response.text
        assert response.json()["active"] is True
        assert response.json()["subject"] == owner.id
    # The request log names the account as the caller of both.
    assert servers.app.request_log is not None
    assert servers.app.request_log.flush(timeout=10)
    with sessions.read.begin() as session:
        callers = session.scalars(
            sa.select(RequestLog.user_id).where(RequestLog.method.like("%IntrospectToken"))
        ).all()
    assert [str(caller) for caller in callers] == [account_id, account_id]


def test_the_account_scopes_apply(
    servers: Servers, stubs: tuple[AuthStub, org_grpc.OrganizationServiceStub]
) -> None:
    auth, orgs = stubs
    owner = sign_up(auth)
    account_id = _service_account(orgs, owner, ("read",))
    with servers.channel(_certificate(servers.pki.ca, account_id)) as channel:
        refused = error_of(lambda: _introspect(AuthStub(channel), owner.token))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )


def test_certificates_that_name_no_existing_account_are_refused(
    servers: Servers, stubs: tuple[AuthStub, org_grpc.OrganizationServiceStub]
) -> None:
    auth, _ = stubs
    owner = sign_up(auth)
    for certificate in (
        issue(servers.pki.ca, client=True),  # no SAN URI
        _certificate(servers.pki.ca, str(uuid.uuid4())),  # no such account
        issue(servers.pki.ca, client=True, uris=(f"{SAN_URI_PREFIX}not-a-uuid",)),
    ):
        with servers.channel(certificate) as channel:
            refused = error_of(functools.partial(_introspect, AuthStub(channel), owner.token))
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "CERTIFICATE_UNMAPPED",
        )
        with servers.https(certificate) as http:
            response = http.post("/auth/introspect", json={"token": owner.token})
        assert response.status_code == 401
        assert http_error_of(response).reason == "CERTIFICATE_UNMAPPED"


def test_mtls_port_requires_a_certificate_from_the_client_ca(
    servers: Servers, stubs: tuple[AuthStub, org_grpc.OrganizationServiceStub]
) -> None:
    auth, orgs = stubs
    owner = sign_up(auth)
    account_id = _service_account(orgs, owner, ("introspect",))
    other_ca = make_authority("Another CA")
    for certificate in (None, _certificate(other_ca, account_id)):
        with servers.channel(certificate) as channel:
            failed = error_of(functools.partial(_introspect, AuthStub(channel), owner.token))
        # The handshake fails: no call is made at all.
        assert failed.code is grpc.StatusCode.UNAVAILABLE
    # HTTPS: another CA's certificate fails the handshake (under TLS 1.3 the client learns it
    # on its first read); none is fine (users' callers).
    with (
        pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError)),
        servers.https(_certificate(other_ca, account_id)) as refused,
    ):
        refused.get("/healthz")
    with servers.https(None) as http:
        assert http.get("/healthz").status_code == 200


def test_an_expired_certificate_fails_the_handshake(
    servers: Servers, stubs: tuple[AuthStub, org_grpc.OrganizationServiceStub]
) -> None:
    auth, orgs = stubs
    owner = sign_up(auth)
    expired = _certificate(
        servers.pki.ca, _service_account(orgs, owner, ("introspect",)), expired=True
    )
    with servers.channel(expired) as channel:
        failed = error_of(lambda: _introspect(AuthStub(channel), owner.token))
    assert failed.code is grpc.StatusCode.UNAVAILABLE


def test_a_connection_outliving_its_certificate_is_refused_at_expiry(
    servers: Servers,
    stubs: tuple[AuthStub, org_grpc.OrganizationServiceStub],
    clock: FakeClock,
) -> None:
    auth, orgs = stubs
    owner = sign_up(auth)
    not_after = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    certificate = _certificate(
        servers.pki.ca, _service_account(orgs, owner, ("introspect",)), not_after=not_after
    )
    # The handshake checks the real time; the server's own check, its clock.
    clock.advance(seconds=(not_after - clock()).total_seconds() - 60)
    with servers.channel(certificate) as channel:
        _introspect(AuthStub(channel), owner.token)  # verified and cached
        clock.advance(seconds=60)
        refused = error_of(lambda: _introspect(AuthStub(channel), owner.token))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CERTIFICATE_EXPIRED",
    )


def test_deleting_the_account_refuses_its_certificate_on_the_next_call(
    servers: Servers, stubs: tuple[AuthStub, org_grpc.OrganizationServiceStub]
) -> None:
    auth, orgs = stubs
    owner = sign_up(auth)
    organization, account_id = _organization_and_account(orgs, owner, ("introspect",))
    certificate = _certificate(servers.pki.ca, account_id)
    with servers.channel(certificate) as channel:
        service = AuthStub(channel)
        for _ in range(2):  # verified, then from the cache
            assert _introspect(service, owner.token).active
        orgs.DeleteServiceAccount(
            organization_service_pb2.DeleteServiceAccountRequest(
                slug=organization.slug, service_account_id=account_id
            ),
            metadata=owner.metadata,
        )
        refused = error_of(lambda: _introspect(service, owner.token))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CERTIFICATE_UNMAPPED",
    )


def test_a_bearer_token_wins_over_the_certificate(
    servers: Servers, stubs: tuple[AuthStub, org_grpc.OrganizationServiceStub]
) -> None:
    auth, orgs = stubs
    owner = sign_up(auth)
    certificate = _certificate(servers.pki.ca, _service_account(orgs, owner, ("introspect",)))
    with servers.channel(certificate) as channel:
        me = AuthStub(channel).GetMe(auth_service_pb2.GetMeRequest(), metadata=owner.metadata)
    assert me.user.id == owner.id


def test_the_plain_grpc_port_does_not_read_certificates(
    servers: Servers, stubs: tuple[AuthStub, org_grpc.OrganizationServiceStub]
) -> None:
    auth, orgs = stubs
    owner = sign_up(auth)
    certificate = _certificate(servers.pki.ca, _service_account(orgs, owner, ("introspect",)))
    # The ordinary port never asks for a certificate: one offered is not sent, so the call
    # has no credential.
    with servers.channel(certificate, servers.app.port) as channel:
        refused = error_of(lambda: _introspect(AuthStub(channel), owner.token))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CREDENTIALS_MISSING",
    )


def test_mtls_port_needs_a_client_ca(settings: Settings) -> None:
    environ = {
        "DATABASE_URL": settings.database_url,
        "JWT_SECRET": settings.jwt_secret,
        "JWT_REFRESH_SECRET": settings.jwt_refresh_secret,
        "MTLS_PORT": "0",
    }
    with pytest.raises(ConfigError, match="MTLS_PORT needs TLS_CLIENT_CA_FILE"):
        Settings.from_env(environ)


def test_public_rpcs_stay_public_for_certificate_callers(
    servers: Servers, stubs: tuple[AuthStub, org_grpc.OrganizationServiceStub]
) -> None:
    auth, orgs = stubs
    certificate = _certificate(servers.pki.ca, _service_account(orgs, sign_up(auth), ("read",)))
    with servers.channel(certificate) as channel:
        jwks = AuthStub(channel).GetJwks(auth_service_pb2.GetJwksRequest(), timeout=10)
    assert jwks.keys
    with servers.https(certificate) as http:
        assert http.get("/.well-known/jwks.json").status_code == 200


def test_certificate_calls_count_per_account_not_per_address(
    servers: Servers, stubs: tuple[AuthStub, org_grpc.OrganizationServiceStub]
) -> None:
    auth, orgs = stubs
    owner = sign_up(auth)
    certificate = _certificate(servers.pki.ca, _service_account(orgs, owner, ("introspect",)))
    with servers.channel(certificate) as channel:
        for _ in range(PER_ADDRESS_LIMIT + 2):
            assert _introspect(AuthStub(channel), owner.token).active
    # A certificate that proves nothing is counted per address, as a bad token is.
    unmapped = issue(servers.pki.ca, client=True)
    with servers.channel(unmapped) as channel:
        reasons = [
            error_of(functools.partial(_introspect, AuthStub(channel), owner.token)).reason
            for _ in range(PER_ADDRESS_LIMIT + 1)
        ]
    assert reasons == ["CERTIFICATE_UNMAPPED"] * PER_ADDRESS_LIMIT + ["RATE_LIMITED"]
