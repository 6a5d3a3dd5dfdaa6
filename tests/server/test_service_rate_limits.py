"""The service policies through the real server: CreateServiceToken (per client IP) and
IntrospectToken (per service account) each count in a bucket of their own, apart from the
sign-ins' and from the default policy, and apart from each other."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2
from luman.organization.v1 import organization_service_pb2_grpc as org_grpc
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.server.organization_support import create_organization, sign_up
from tests.support import FakeClock, bearer, rich_error

WINDOW_MS = 15 * 60 * 1000
AuthStub = auth_service_pb2_grpc.AuthServiceStub
OrgStub = org_grpc.OrganizationServiceStub


@dataclasses.dataclass
class Stubs:
    auth: AuthStub
    orgs: OrgStub


@pytest.fixture
def limited(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[Callable[..., Stubs]]:
    with contextlib.ExitStack() as stack:

        def make(**limits: int) -> Stubs:
            app = build_server(
                dataclasses.replace(settings, **limits),  # type: ignore[arg-type]
                sessions,
                clock=clock,
                hasher=hasher,
                monotonic=lambda: clock().timestamp(),
            )
            app.start()
            stack.callback(app.stop, None)
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{app.port}"))
            return Stubs(AuthStub(channel), OrgStub(channel))

        yield make


def _limited(call: Callable[[], object]) -> bool:
    """True when the call is refused by a rate limit; False when it succeeds."""
    try:
        call()
    except grpc.RpcError as exc:
        error = rich_error(exc)
        assert (error.code, error.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RATE_LIMITED",
        ), error
        return True
    return False


def test_service_token_and_sign_in_buckets_are_independent(
    limited: Callable[..., Stubs],
) -> None:
    stubs = limited(
        auth_rate_limit_max_requests=2,
        auth_rate_limit_window_ms=WINDOW_MS,
        service_token_rate_limit_max_requests=4,
        service_token_rate_limit_window_ms=WINDOW_MS,
    )
    owner = sign_up(stubs.auth, "owner")  # sign-ins: 1 of 2
    organization = create_organization(stubs.orgs, owner)
    secret = stubs.orgs.CreateServiceAccount(
        organization_service_pb2.CreateServiceAccountRequest(
            slug=organization.slug, name="svc", scopes=["introspect"]
        ),
        metadata=owner.metadata,
    ).secret

    def exchange() -> object:
        return stubs.auth.CreateServiceToken(
            auth_service_pb2.CreateServiceTokenRequest(secret=secret)
        )

    # Three exchanges, more than the sign-ins' 2: their own bucket...
    assert [_limited(exchange) for _ in range(3)] == [False, False, False]
    # ... which left the address's sign-ins alone: one more Register, then that bucket is full;
    assert not _limited(lambda: sign_up(stubs.auth, "second"))
    assert _limited(lambda: sign_up(stubs.auth, "third"))
    # and the full sign-in bucket does not refuse exchanges: the fourth still goes through.
    assert [_limited(exchange) for _ in range(2)] == [False, True]


def test_introspection_counts_per_service_account_apart_from_the_default_policy(
    limited: Callable[..., Stubs],
) -> None:
    stubs = limited(
        rate_limit_max_requests=3,
        rate_limit_window_ms=WINDOW_MS,
        introspection_rate_limit_max_requests=4,
        introspection_rate_limit_window_ms=WINDOW_MS,
    )
    owner = sign_up(stubs.auth, "owner")
    organization = create_organization(stubs.orgs, owner)  # owner's default calls: 1 of 3
    secrets = [
        stubs.orgs.CreateServiceAccount(
            organization_service_pb2.CreateServiceAccountRequest(
                slug=organization.slug, name=name, scopes=["introspect"]
            ),
            metadata=owner.metadata,
        ).secret
        for name in ("first", "second")
    ]  # 3 of 3
    first, second = (
        stubs.auth.CreateServiceToken(
            auth_service_pb2.CreateServiceTokenRequest(secret=secret)
        ).access_token
        for secret in secrets
    )

    def introspect(caller: str) -> object:
        return stubs.auth.IntrospectToken(
            auth_service_pb2.IntrospectTokenRequest(token=owner.token), metadata=bearer(caller)
        )

    # Four, more than the default policy's 3: introspection's own bucket, per account.
    assert [_limited(lambda: introspect(first)) for _ in range(5)] == [False] * 4 + [True]
    assert not _limited(lambda: introspect(second))
    # The owner's default budget was spent by the setup, not by the introspections.
    assert _limited(
        lambda: stubs.auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=owner.metadata)
    )
