"""Device login (RFC 8628) through the real server and real channels, on SQLite and PostgreSQL:
start, poll (each of section 3.5's answers), look, approve, deny, claim once, and an approval
withdrawn with the credential that made it. Limits: test_device_login_limits.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import threading
from collections.abc import Callable

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2

from luman.auth.v1 import auth_pb2, auth_service_pb2
from luman.client import token_format
from luman.organization.v1 import organization_service_pb2_grpc
from luman.server.app import App, build_server
from luman.server.auth.cli_tokens import hash_secret
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.models import CliToken, DeviceLogin
from luman.server.db.session import Sessions
from tests.server.device_login_support import (
    CLIENT_ID,
    HOST,
    Stub,
    approve,
    deny,
    failure,
    get,
    personal_token,
    poll,
    poll_failure,
    start,
)
from tests.server.organization_support import create_organization, sign_up
from tests.server.test_service_accounts import create_account, service_token
from tests.support import PASSWORD, FakeClock, bearer, get_me, refused_reason, register, rich_error

Code = grpc.StatusCode
USER_CODE = re.compile(r"^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Many wrong codes from 127.0.0.1 here; test_device_login_limits.py covers the budgets.
    return dataclasses.replace(
        settings, device_code_attempts_per_ip=10_000, device_code_attempts_global=10_000
    )


def _access(auth: Stub) -> tuple[str, str]:
    """A new user's (id, access token with every scope)."""
    response = register(auth)
    return response.user.id, response.tokens.access_token


def _cli_tokens(auth: Stub, credential: str) -> list[auth_pb2.CliToken]:
    listed = auth.ListCliTokens(
        auth_service_pb2.ListCliTokensRequest(), metadata=bearer(credential)
    )
    return list(listed.cli_tokens)


def _token_rows(sessions: Sessions) -> int:
    with sessions.engine.connect() as conn:
        count: int = conn.execute(sa.select(sa.func.count()).select_from(CliToken)).scalar_one()
    return count


# Start


def test_start_answers_with_rfc_8628_fields(auth: Stub) -> None:
    started = start(auth)
    assert token_format.verify_checksum(started.device_code, "lmd_")
    assert started.device_code.startswith("lmd_")
    assert len(started.device_code) == 53
    assert USER_CODE.match(started.user_code), started.user_code
    assert started.verification_uri == "http://localhost:8080/device"
    assert started.verification_uri_complete == (
        f"{started.verification_uri}?user_code={started.user_code}"
    )
    assert started.expires_in == 600
    assert started.interval == 5
    again = start(auth)
    assert again.device_code != started.device_code
    assert again.user_code != started.user_code


@pytest.mark.shape_check
def test_start_refuses_bad_fields(auth: Stub) -> None:
    cases: list[tuple[dict[str, str], str]] = [
        ({"client_id": "curl"}, "client_id"),
        ({"client_id": ""}, "client_id"),
        ({"client_id": "x" * 101}, "client_id"),
        ({"scope": "read admin"}, "scope"),
        ({"host_name": "h" * 101}, "host_name"),
        ({"host_name": "evil\nhost"}, "host_name"),
        ({"host_name": "bell\x07"}, "host_name"),
        ({"client_version": "v" * 51}, "client_version"),
        ({"os": "linux\x1b[31m"}, "os"),
    ]
    for fields, field in cases:
        got = failure(lambda f=fields: start(auth, **f))  # type: ignore[misc]
        assert (got.error.code, got.error.reason) == (Code.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert list(got.error.field_violations) == [field], (fields, got)


def test_start_allows_only_the_configured_clients(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    app = build_server(
        dataclasses.replace(settings, device_client_ids=("acme-cli", "acme-ci")),
        sessions,
        clock=clock,
        hasher=hasher,
    )
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            auth = Stub(channel)
            refused = failure(lambda: start(auth, client_id=CLIENT_ID))
            assert refused.error.code == Code.INVALID_ARGUMENT
            assert list(refused.error.field_violations) == ["client_id"]
            started = start(auth, client_id="acme-ci")
            # The client id is part of the grant: another allowed client cannot poll it.
            assert poll_failure(auth, started.device_code, "acme-cli").error.reason == (
                "INVALID_GRANT"
            )
            pending = poll_failure(auth, started.device_code, "acme-ci")
            assert pending.error.reason == "AUTHORIZATION_PENDING"
    finally:
        app.stop(None)


def test_device_code_is_stored_only_hashed(auth: Stub, sessions: Sessions) -> None:
    started = start(auth, scope="read")
    with sessions.engine.connect() as conn:
        rows = conn.execute(sa.select(DeviceLogin.__table__)).mappings().all()
    assert len(rows) == 1
    row = rows[0]
    secret_part = started.device_code[4:]
    for column, value in row.items():
        assert secret_part not in str(value), column
    assert row["device_code_hash"] == hash_secret(started.device_code)
    assert row["user_code"] == started.user_code.replace("-", "")
    assert row["scopes"] == "read"


# Poll


def test_poll_pending_then_slow_down_grows_the_interval(auth: Stub, clock: FakeClock) -> None:
    code = start(auth).device_code
    pending = poll_failure(auth, code)
    assert pending.error.code == Code.FAILED_PRECONDITION
    assert pending.error.reason == "AUTHORIZATION_PENDING"
    # Sooner than the interval: slow_down, and 5 s more each time (RFC 8628 section 3.5).
    for waited, grown in ((0, 10), (5, 15), (14, 20)):
        clock.advance(seconds=waited)
        slow = poll_failure(auth, code)
        assert slow.error.code == Code.RESOURCE_EXHAUSTED, slow
        assert slow.error.reason == "SLOW_DOWN"
        assert slow.error.retry_delay_seconds == grown
        assert slow.metadata["interval"] == str(grown)
    clock.advance(seconds=20)  # the grown interval: accepted
    again = poll_failure(auth, code)
    assert again.error.reason == "AUTHORIZATION_PENDING", again
    assert again.metadata["interval"] == "20"
    clock.advance(seconds=19)
    assert poll_failure(auth, code).error.reason == "SLOW_DOWN"


def test_poll_after_deny_is_access_denied(auth: Stub, clock: FakeClock) -> None:
    _, access = _access(auth)
    started = start(auth)
    deny(auth, access, started.user_code)
    denied = poll_failure(auth, started.device_code)
    assert (denied.error.code, denied.error.reason) == (Code.PERMISSION_DENIED, "ACCESS_DENIED")
    clock.advance(seconds=5)
    assert poll_failure(auth, started.device_code).error.reason == "ACCESS_DENIED"


def test_poll_after_the_lifetime_is_expired_token(auth: Stub, clock: FakeClock) -> None:
    started = start(auth)
    clock.advance(seconds=599)
    assert poll_failure(auth, started.device_code).error.reason == "AUTHORIZATION_PENDING"
    clock.advance(seconds=1)
    expired = poll_failure(auth, started.device_code)
    assert (expired.error.code, expired.error.reason) == (
        Code.FAILED_PRECONDITION,
        "EXPIRED_TOKEN",
    )


def test_approved_login_hands_out_its_token_once(
    auth: Stub, clock: FakeClock, sessions: Sessions
) -> None:
    user_id, access = _access(auth)
    started = start(auth, scope="read write", host_name="ci-runner-7")
    assert poll_failure(auth, started.device_code).error.reason == "AUTHORIZATION_PENDING"
    approve(auth, access, started.user_code)
    clock.advance(seconds=5)
    claimed = poll(auth, started.device_code)
    assert claimed.token_type == "Bearer"
    assert claimed.scope == "read write"
    assert not claimed.HasField("expires_in")  # no MAX_TOKEN_LIFETIME here: no expiry
    assert claimed.cli_token.name == "ci-runner-7 (luman CLI)"
    assert sorted(claimed.cli_token.scopes) == ["read", "write"]
    assert claimed.user.id == user_id
    assert get_me(auth, claimed.access_token).user.id == user_id
    listed = _cli_tokens(auth, access)
    assert [(t.id, t.name) for t in listed] == [(claimed.cli_token.id, "ci-runner-7 (luman CLI)")]
    # Claimed once: every later poll is invalid_grant, however patient.
    for wait in (5, 60):
        clock.advance(seconds=wait)
        again = poll_failure(auth, started.device_code)
        assert (again.error.code, again.error.reason) == (Code.UNAUTHENTICATED, "INVALID_GRANT")
    assert _token_rows(sessions) == 1


def test_poll_with_another_client_or_an_unknown_code_is_invalid_grant(auth: Stub) -> None:
    started = start(auth)
    for code, client_id in (
        (started.device_code, "other-cli"),
        (token_format.new_token("lmd_"), CLIENT_ID),  # well formed, never issued
        ("lmd_garbage", CLIENT_ID),
        (started.device_code[:-1] + ("a" if started.device_code[-1] != "a" else "b"), CLIENT_ID),
        ("lmp_" + started.device_code[4:], CLIENT_ID),
    ):
        got = poll_failure(auth, code, client_id)
        assert (got.error.code, got.error.reason) == (Code.UNAUTHENTICATED, "INVALID_GRANT"), code
    # None of those touched the login: its first real poll is not too soon.
    assert poll_failure(auth, started.device_code).error.reason == "AUTHORIZATION_PENDING"


@pytest.mark.shape_check
def test_poll_refuses_bad_fields(auth: Stub) -> None:
    code = token_format.new_token("lmd_")
    for request, field in (
        (auth_service_pb2.PollDeviceLoginRequest(device_code=code, client_id=CLIENT_ID,
                                                 grant_type="password"), "grant_type"),
        (auth_service_pb2.PollDeviceLoginRequest(client_id=CLIENT_ID), "device_code"),
        (auth_service_pb2.PollDeviceLoginRequest(device_code=code), "client_id"),
        (auth_service_pb2.PollDeviceLoginRequest(device_code="x" * 101, client_id=CLIENT_ID),
         "device_code"),
    ):  # fmt: skip
        got = failure(lambda r=request: auth.PollDeviceLogin(r))  # type: ignore[misc]
        assert got.error.code == Code.INVALID_ARGUMENT, got
        assert list(got.error.field_violations) == [field]


def test_poll_with_the_rfc_grant_type_is_accepted(auth: Stub) -> None:
    started = start(auth)
    got = failure(
        lambda: auth.PollDeviceLogin(
            auth_service_pb2.PollDeviceLoginRequest(
                device_code=started.device_code, client_id=CLIENT_ID, grant_type=GRANT_TYPE
            )
        )
    )
    assert got.error.reason == "AUTHORIZATION_PENDING"


def test_racing_polls_after_approval_claim_exactly_once(
    app: App, auth: Stub, clock: FakeClock, sessions: Sessions
) -> None:
    _, access = _access(auth)
    started = start(auth)
    approve(auth, access, started.user_code)
    racers = 6
    outcomes = _race(app, racers, lambda stub, _: poll(stub, started.device_code))
    assert sorted(outcomes) == ["INVALID_GRANT"] * (racers - 1) + ["ok"], outcomes
    assert _token_rows(sessions) == 1


def _race(app: App, racers: int, call: Callable[[Stub, int], object]) -> list[str]:
    """Run `call(stub, n)` on `racers` threads, each on its own channel,
    released together; returns "ok" or the ErrorInfo reason of each."""
    barrier = threading.Barrier(racers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def race(n: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = Stub(channel)
            grpc.channel_ready_future(channel).result(timeout=10)
            barrier.wait(timeout=10)
            try:
                call(stub, n)
                outcome = "ok"
            except grpc.RpcError as exc:
                outcome = rich_error(exc).reason
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == racers
    return outcomes


# Look, approve, deny


def test_get_shows_the_pending_login(auth: Stub, clock: FakeClock) -> None:
    _, access = _access(auth)
    created = clock()
    started = start(
        auth, scope="write read", host_name="  ci-7  ", client_version="2.0.1", os="darwin"
    )
    clock.advance(seconds=30)
    code = started.user_code
    for typed in (code, code.lower(), code.replace("-", ""), f" {code[:4].lower()} {code[5:]} "):
        login = get(auth, access, typed).device_login
        assert login.user_code == code
        assert login.client_id == CLIENT_ID
        assert list(login.scopes) == ["read", "write"]
        assert login.host_name == "ci-7"
        assert login.client_version == "2.0.1"
        assert login.os == "darwin"
        assert login.client_ip == "127.0.0.1"
        assert login.create_time.ToDatetime(dt.UTC) == created
        assert login.expire_time.ToDatetime(dt.UTC) == created + dt.timedelta(seconds=600)
    # Lower case and without the dash, approval works too.
    approve(auth, access, code.replace("-", "").lower())
    clock.advance(seconds=5)
    assert poll(auth, started.device_code).cli_token.name == "ci-7 (luman CLI)"


def test_codes_not_pending_all_get_the_same_not_found(auth: Stub, clock: FakeClock) -> None:
    _, access = _access(auth)
    approved, denied, expired = start(auth), start(auth), start(auth)
    approve(auth, access, approved.user_code)
    deny(auth, access, denied.user_code)
    clock.advance(seconds=600)
    # Only the expired login's lifetime is over; the others are decided.
    never = "BBBB-BBBB"
    for code in (never, approved.user_code, denied.user_code, expired.user_code):
        for call in (
            lambda c=code: get(auth, access, c),
            lambda c=code: approve(auth, access, c),
            lambda c=code: deny(auth, access, c),
        ):
            got = failure(call)
            assert (got.error.code, got.error.reason) == (
                Code.NOT_FOUND,
                "DEVICE_CODE_NOT_FOUND",
            ), code
            assert got.error.message == "no pending login has this code; check it, or start again"


def test_decided_codes_are_not_found_before_expiry(auth: Stub) -> None:
    _, access = _access(auth)
    approved, denied = start(auth), start(auth)
    approve(auth, access, approved.user_code)
    deny(auth, access, denied.user_code)
    for code in (approved.user_code, denied.user_code, "ZZZZ-ZZZZ"):
        got = failure(lambda c=code: get(auth, access, c))  # type: ignore[misc]
        assert got.error.reason == "DEVICE_CODE_NOT_FOUND"


def test_malformed_user_codes_are_invalid_argument(auth: Stub) -> None:
    _, access = _access(auth)
    for code in ("", "   ", "ABCD-EFGH", "BCDF-GHJ", "BCDF-GHJKL", "BCDF-GHJ1", "BCDF_GHJK"):
        for call in (
            lambda c=code: get(auth, access, c),
            lambda c=code: approve(auth, access, c),
            lambda c=code: deny(auth, access, c),
        ):
            got = failure(call)
            assert got.error.code == Code.INVALID_ARGUMENT, (code, got)
            assert list(got.error.field_violations) == ["user_code"]


def test_approve_may_narrow_the_scopes(auth: Stub, clock: FakeClock) -> None:
    user_id, access = _access(auth)
    started = start(auth)
    approve(auth, access, started.user_code, scopes=("read",))
    claimed = poll(auth, started.device_code)
    assert claimed.scope == "read"
    assert list(claimed.cli_token.scopes) == ["read"]
    assert get_me(auth, claimed.access_token).user.id == user_id
    refused = failure(lambda: personal_token(auth, claimed.access_token))
    assert (refused.error.code, refused.error.reason) == (
        Code.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )


def test_approve_never_widens_the_scopes(auth: Stub) -> None:
    _, access = _access(auth)
    started = start(auth, scope="read")
    for scopes in (("read", "write"), ("write",), ("admin",)):
        got = failure(lambda s=scopes: approve(auth, access, started.user_code, s))  # type: ignore[misc]
        assert got.error.code == Code.INVALID_ARGUMENT, (scopes, got)
        assert list(got.error.field_violations) == ["scopes"]
    # Still pending: none of those decided anything.
    assert get(auth, access, started.user_code).device_login.host_name == HOST


def test_approve_with_a_read_only_token_is_insufficient_scope(auth: Stub) -> None:
    _, access = _access(auth)
    _, read_only = personal_token(auth, access, ("read",))
    started = start(auth, scope="read")
    assert get(auth, read_only, started.user_code).device_login.user_code == started.user_code
    for call in (
        lambda: approve(auth, read_only, started.user_code),
        lambda: deny(auth, read_only, started.user_code),
    ):
        got = failure(call)
        assert (got.error.code, got.error.reason) == (
            Code.PERMISSION_DENIED,
            "INSUFFICIENT_SCOPE",
        )
    assert poll_failure(auth, started.device_code).error.reason == "AUTHORIZATION_PENDING"


def test_a_service_account_cannot_decide(auth: Stub, channel: grpc.Channel) -> None:
    orgs = organization_service_pb2_grpc.OrganizationServiceStub(channel)
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    created = create_account(orgs, owner, organization, scopes=("read", "write"))
    token = service_token(auth, created.secret)
    started = start(auth)
    for call in (
        lambda: get(auth, token, started.user_code),
        lambda: approve(auth, token, started.user_code),
        lambda: deny(auth, token, started.user_code),
    ):
        got = failure(call)
        assert (got.error.code, got.error.reason) == (Code.PERMISSION_DENIED, "USER_REQUIRED")


@pytest.mark.shape_check
def test_deciding_needs_a_token(auth: Stub) -> None:
    code = "BCDF-GHJK"
    for call in (
        lambda: auth.GetDeviceLogin(auth_service_pb2.GetDeviceLoginRequest(user_code=code)),
        lambda: auth.ApproveDeviceLogin(auth_service_pb2.ApproveDeviceLoginRequest(user_code=code)),
        lambda: auth.DenyDeviceLogin(auth_service_pb2.DenyDeviceLoginRequest(user_code=code)),
    ):
        got = failure(call)
        assert got.error.code == Code.UNAUTHENTICATED, got


# Approval withdrawn


def test_approver_deleted_before_the_claim_is_access_denied(auth: Stub, sessions: Sessions) -> None:
    registered = register(auth)
    email = registered.user.email
    started = start(auth)
    approve(auth, registered.tokens.access_token, started.user_code)
    with sessions.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM users WHERE email = :email"), {"email": email})
    got = poll_failure(auth, started.device_code)
    assert (got.error.code, got.error.reason) == (Code.PERMISSION_DENIED, "ACCESS_DENIED")
    assert _token_rows(sessions) == 0


def test_approving_session_revoked_before_the_claim_is_access_denied(auth: Stub) -> None:
    registered = register(auth)
    approving = registered.tokens.access_token
    other = auth.Login(
        auth_service_pb2.LoginRequest(email=registered.user.email, password=PASSWORD)
    ).tokens.access_token
    listed = auth.ListSessions(auth_service_pb2.ListSessionsRequest(), metadata=bearer(approving))
    [session_id] = [s.id for s in listed.sessions if s.current]
    started = start(auth)
    approve(auth, approving, started.user_code)
    auth.RevokeSession(
        auth_service_pb2.RevokeSessionRequest(session_id=session_id), metadata=bearer(other)
    )
    got = poll_failure(auth, started.device_code)
    assert (got.error.code, got.error.reason) == (Code.PERMISSION_DENIED, "ACCESS_DENIED")
    assert _cli_tokens(auth, other) == []


def test_logout_all_before_the_claim_is_access_denied(auth: Stub, clock: FakeClock) -> None:
    registered = register(auth)
    started = start(auth)
    approve(auth, registered.tokens.access_token, started.user_code)
    clock.advance(seconds=1)
    auth.LogoutAll(
        auth_service_pb2.LogoutAllRequest(), metadata=bearer(registered.tokens.access_token)
    )
    got = poll_failure(auth, started.device_code)
    assert (got.error.code, got.error.reason) == (Code.PERMISSION_DENIED, "ACCESS_DENIED")
    # The login is over: later polls say the same, and nothing was issued.
    clock.advance(seconds=5)
    assert poll_failure(auth, started.device_code).error.reason == "ACCESS_DENIED"
    fresh = auth.Login(
        auth_service_pb2.LoginRequest(email=registered.user.email, password=PASSWORD)
    ).tokens.access_token
    assert _cli_tokens(auth, fresh) == []


def test_approving_token_revoked_before_the_claim_is_access_denied(auth: Stub) -> None:
    _, access = _access(auth)
    parent_id, parent = personal_token(auth, access)
    started = start(auth)
    approve(auth, parent, started.user_code)
    auth.RevokeCliToken(
        auth_service_pb2.RevokeCliTokenRequest(token_id=parent_id), metadata=bearer(access)
    )
    got = poll_failure(auth, started.device_code)
    assert (got.error.code, got.error.reason) == (Code.PERMISSION_DENIED, "ACCESS_DENIED")
    assert _cli_tokens(auth, access) == []


def test_approved_with_a_personal_token_the_claim_is_its_child(auth: Stub) -> None:
    user_id, access = _access(auth)
    parent_id, parent = personal_token(auth, access)
    started = start(auth)
    approve(auth, parent, started.user_code)
    claimed = poll(auth, started.device_code)
    assert get_me(auth, claimed.access_token).user.id == user_id
    auth.RevokeCliToken(
        auth_service_pb2.RevokeCliTokenRequest(token_id=parent_id), metadata=bearer(access)
    )
    assert refused_reason(auth, claimed.access_token) == "TOKEN_REVOKED"
    assert _cli_tokens(auth, access) == []


def test_the_claimed_token_never_outlives_its_parent(auth: Stub, clock: FakeClock) -> None:
    _, access = _access(auth)
    created = auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(
            name="laptop", ttl=duration_pb2.Duration(seconds=3600)
        ),
        metadata=bearer(access),
    )
    started = start(auth)
    approve(auth, created.token, started.user_code)
    clock.advance(seconds=600 - 1)
    claimed = poll(auth, started.device_code)
    assert claimed.cli_token.expire_time == created.cli_token.expire_time
    assert claimed.expires_in == 3600 - 599
    # Expired with its parent.
    clock.advance(seconds=3600)
    assert refused_reason(auth, claimed.access_token) == "TOKEN_EXPIRED"


def test_parent_expired_before_the_claim_is_access_denied(auth: Stub, clock: FakeClock) -> None:
    _, access = _access(auth)
    created = auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(
            name="laptop", ttl=duration_pb2.Duration(seconds=60)
        ),
        metadata=bearer(access),
    )
    started = start(auth)
    approve(auth, created.token, started.user_code)
    clock.advance(seconds=60)
    got = poll_failure(auth, started.device_code)
    assert (got.error.code, got.error.reason) == (Code.PERMISSION_DENIED, "ACCESS_DENIED")
    assert [t.id for t in _cli_tokens(auth, access)] == [created.cli_token.id]


def test_max_token_lifetime_bounds_the_claimed_token(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    app = build_server(
        dataclasses.replace(settings, max_token_lifetime=86_400.0),
        sessions,
        clock=clock,
        hasher=hasher,
    )
    app.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            auth = Stub(channel)
            _, access = _access(auth)
            started = start(auth)
            approve(auth, access, started.user_code)
            claimed = poll(auth, started.device_code)
    finally:
        app.stop(None)
    assert claimed.expires_in == 86_400
    assert claimed.cli_token.expire_time.ToDatetime(dt.UTC) == clock() + dt.timedelta(days=1)


def test_token_name_fits_whatever_the_host_name(auth: Stub) -> None:
    _, access = _access(auth)
    names = []
    for host in ("", "h" * 100):
        started = start(auth, host_name=host)
        approve(auth, access, started.user_code)
        names.append(poll(auth, started.device_code).cli_token.name)
    assert names == ["luman CLI", "h" * 88 + " (luman CLI)"]


def test_racing_polls_while_pending_answer_pending_once(app: App, auth: Stub) -> None:
    started = start(auth)
    outcomes = _race(app, 5, lambda stub, _: poll(stub, started.device_code))
    assert sorted(outcomes) == ["AUTHORIZATION_PENDING"] + ["SLOW_DOWN"] * 4, outcomes


def test_racing_approve_and_deny_decide_once(app: App, auth: Stub, sessions: Sessions) -> None:
    _, access = _access(auth)
    started = start(auth)

    def decide(stub: Stub, n: int) -> None:
        if n % 2:
            deny(stub, access, started.user_code)
        else:
            approve(stub, access, started.user_code)

    outcomes = _race(app, 6, decide)
    assert sorted(outcomes) == ["DEVICE_CODE_NOT_FOUND"] * 5 + ["ok"], outcomes
    with sessions.engine.connect() as conn:
        state = conn.execute(sa.select(DeviceLogin.__table__.c.state)).scalar_one()
    if state == "denied":
        assert poll_failure(auth, started.device_code).error.reason == "ACCESS_DENIED"
    else:
        assert state == "approved"
        assert poll(auth, started.device_code).token_type == "Bearer"


def test_deleting_an_account_after_its_claim_keeps_the_login_row(
    auth: Stub, sessions: Sessions
) -> None:
    registered = register(auth)
    started = start(auth)
    approve(auth, registered.tokens.access_token, started.user_code)
    poll(auth, started.device_code)
    with sessions.engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM users WHERE email = :email"), {"email": registered.user.email}
        )
    with sessions.engine.connect() as conn:
        row = conn.execute(sa.select(DeviceLogin.__table__)).mappings().one()
    assert (row["approver_id"], row["cli_token_id"], row["state"]) == (None, None, "claimed")
    assert _token_rows(sessions) == 0


def test_a_start_deletes_logins_a_day_past_their_expiry(
    auth: Stub, clock: FakeClock, sessions: Sessions
) -> None:
    old = start(auth)
    clock.advance(seconds=600)
    clock.advance(days=1)
    start(auth)  # exactly a day past: kept, an approver may still look
    clock.advance(seconds=1)
    start(auth)
    with sessions.engine.connect() as conn:
        codes = conn.execute(sa.select(DeviceLogin.__table__.c.user_code)).scalars().all()
    assert len(codes) == 2
    assert old.user_code.replace("-", "") not in codes
    assert poll_failure(auth, old.device_code).error.reason == "INVALID_GRANT"
