"""Client against the real server: typed results, the token on each call, paging, and the
errors the real service sends."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import grpc
import pytest

from luman.client import (
    AlreadyExists,
    Client,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotLoggedIn,
    PermissionDenied,
    RateLimited,
    Role,
    Unauthenticated,
)
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.support import PASSWORD, FakeClock, unique_email


@pytest.fixture
def client(app: App) -> Iterator[Client]:
    with Client(f"127.0.0.1:{app.port}") as c:
        yield c


def _signed_in(app: App, name: str = "Ada") -> Client:
    """A new user's client, carrying a CLI token."""
    client = Client(f"127.0.0.1:{app.port}")
    email = unique_email(name.lower())
    client.auth.register(email, PASSWORD, name)
    client.token = client.auth.cli_login(email, PASSWORD, "test").token
    return client


def _slug() -> str:
    return f"org-{uuid.uuid4().hex[:8]}"


def test_register_cli_login_and_get_me(client: Client) -> None:
    email = unique_email()
    signed_up = client.auth.register(email.upper(), PASSWORD, "Ada Lovelace")
    assert signed_up.user.email == email
    assert signed_up.tokens.access_token
    assert signed_up.user.create_time is not None

    login = client.auth.cli_login(email, PASSWORD, "laptop")
    assert login.token.startswith("lmn_")
    assert login.token_name == "laptop"
    assert login.user.id == signed_up.user.id
    assert login.token not in repr(login)  # secrets stay out of logs and tracebacks

    client.token = login.token
    assert client.auth.get_me() == signed_up.user


def test_access_token_from_login_also_authenticates(client: Client) -> None:
    email = unique_email()
    client.auth.register(email, PASSWORD, "Ada")
    signed_in = client.auth.login(email, PASSWORD)
    client.token = signed_in.tokens.access_token
    assert client.auth.get_me().email == email
    pair = client.auth.refresh_token(signed_in.tokens.refresh_token)
    assert pair.access_token
    assert pair.refresh_token != signed_in.tokens.refresh_token


def test_call_without_token_is_not_logged_in_and_contacts_nobody(closed_port: int) -> None:
    # The port is closed: reaching it would raise Unavailable, not NotLoggedIn.
    with Client(f"127.0.0.1:{closed_port}") as client, pytest.raises(NotLoggedIn) as caught:
        client.organizations.list()
    assert isinstance(caught.value, Unauthenticated)
    assert caught.value.code is None


def test_wrong_password_is_unauthenticated_invalid_credentials(client: Client) -> None:
    email = unique_email()
    client.auth.register(email, PASSWORD, "Ada")
    with pytest.raises(Unauthenticated) as caught:
        client.auth.cli_login(email, PASSWORD + "x")
    assert caught.value.reason == "INVALID_CREDENTIALS"
    assert caught.value.domain == "luman.auth.v1"


def test_unknown_token_is_unauthenticated(client: Client) -> None:
    client.token = "lmn_" + "A" * 43
    with pytest.raises(Unauthenticated) as caught:
        client.auth.get_me()
    assert caught.value.reason == "TOKEN_INVALID"


def test_revoked_cli_token_is_rejected_on_next_use(app: App) -> None:
    with _signed_in(app) as client:
        client.auth.cli_logout()
        with pytest.raises(Unauthenticated) as caught:
            client.auth.get_me()
    assert caught.value.reason == "TOKEN_REVOKED"


def test_cli_logout_with_access_token_is_failed_precondition(client: Client) -> None:
    email = unique_email()
    client.token = client.auth.register(email, PASSWORD, "Ada").tokens.access_token
    with pytest.raises(FailedPrecondition) as caught:
        client.auth.cli_logout()
    assert caught.value.reason == "NOT_A_CLI_TOKEN"


@pytest.mark.shape_check
def test_register_bad_fields_is_invalid_argument_with_violations(client: Client) -> None:
    with pytest.raises(InvalidArgument) as caught:
        client.auth.register("not-an-email", "short", "")
    assert set(caught.value.field_violations) == {"email", "password", "name"}
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_organization_lifecycle_by_slug_and_id(app: App, clock: FakeClock) -> None:
    with _signed_in(app, "Owner") as owner, _signed_in(app, "Grace") as grace:
        slug = _slug()
        created = owner.organizations.create("Acme Corp", slug)
        assert created.slug == slug
        assert created.role is Role.OWNER
        assert owner.organizations.get(slug) == created
        assert owner.organizations.get(uuid.UUID(created.id)) == created

        grace_email = grace.auth.get_me().email
        clock.advance(seconds=1)  # members are listed by join time
        added = owner.organizations.add_member(slug, grace_email.upper(), "admin")
        assert added.role is Role.ADMIN
        assert added.email == grace_email

        # Email resolves to the member's id through ListMembers.
        updated = owner.organizations.update_member_role(slug, grace_email, Role.MEMBER)
        assert updated.role is Role.MEMBER
        assert [m.email for m in owner.organizations.iter_members(slug)][1] == grace_email
        assert grace.organizations.get(slug).role is Role.MEMBER

        owner.organizations.remove_member(slug, uuid.UUID(updated.user_id))
        with pytest.raises(NotFound) as caught:
            grace.organizations.get(slug)
        assert caught.value.reason == "ORGANIZATION_NOT_FOUND"


def test_organization_errors_from_the_real_service(app: App) -> None:
    with _signed_in(app, "Owner") as owner, _signed_in(app, "Member") as member:
        slug = _slug()
        owner.organizations.create("Acme", slug)
        with pytest.raises(AlreadyExists) as exists:
            owner.organizations.create("Acme again", slug)
        assert exists.value.reason == "SLUG_TAKEN"

        member_email = member.auth.get_me().email
        owner.organizations.add_member(slug, member_email)
        with pytest.raises(PermissionDenied):
            member.organizations.add_member(slug, unique_email(), Role.OWNER)

        with pytest.raises(FailedPrecondition) as last_owner:
            owner.organizations.remove_member(slug, owner.auth.get_me().id)
        assert last_owner.value.reason == "LAST_OWNER"

        with pytest.raises(NotFound) as no_user:
            owner.organizations.add_member(slug, unique_email())
        assert no_user.value.reason == "USER_NOT_FOUND"

        with pytest.raises(NotFound) as no_member:
            owner.organizations.remove_member(slug, unique_email())
        assert no_member.value.reason == "MEMBER_NOT_FOUND"

        with pytest.raises(InvalidArgument) as bad_slug:
            owner.organizations.create("Acme", "-x-")
        assert set(bad_slug.value.field_violations) == {"slug"}


def test_bad_role_is_invalid_argument_before_any_call(closed_port: int) -> None:
    client = Client(f"127.0.0.1:{closed_port}", token="any")
    with client, pytest.raises(InvalidArgument) as caught:
        client.organizations.update_member_role("acme", "a@example.com", "boss")
    assert set(caught.value.field_violations) == {"role"}


def test_iteration_follows_page_tokens_across_pages(app: App, clock: FakeClock) -> None:
    with _signed_in(app, "Owner") as owner:
        slugs = [_slug() for _ in range(5)]
        for slug in slugs:
            clock.advance(seconds=1)  # listings are ordered by time, then id
            owner.organizations.create(slug.title(), slug)

        first = owner.organizations.list(page_size=2)
        assert [o.slug for o in first.items] == slugs[:2]
        assert first.next_page_token
        second = owner.organizations.list(page_size=2, page_token=first.next_page_token)
        assert [o.slug for o in second.items] == slugs[2:4]

        assert [o.slug for o in owner.organizations.iter(page_size=2)] == slugs
        assert [o.slug for o in owner.organizations.iter(page_size=5)] == slugs


def test_member_iteration_and_email_lookup_across_pages(app: App, clock: FakeClock) -> None:
    with _signed_in(app, "Owner") as owner:
        slug = _slug()
        owner.organizations.create("Acme", slug)
        emails = [owner.auth.get_me().email]
        for index in range(4):
            email = unique_email(f"m{index}")
            with Client(owner.address) as anonymous:
                anonymous.auth.register(email, PASSWORD, f"M{index}")
            clock.advance(seconds=1)
            owner.organizations.add_member(slug, email)
            emails.append(email)

        assert [m.email for m in owner.organizations.iter_members(slug, page_size=2)] == emails
        page = owner.organizations.list_members(slug, page_size=3)
        assert len(page.items) == 3
        assert page.next_page_token
        assert owner.organizations.find_member(slug, emails[-1].upper()).email == emails[-1]


def test_health_check_needs_no_token(client: Client) -> None:
    assert client.check_health() == "SERVING"
    assert client.check_health("luman.auth.v1.AuthService") == "SERVING"


def test_rate_limited_sign_in_carries_retry_delay(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> None:
    strict = dataclasses.replace(settings, auth_rate_limit_max_requests=1)
    server = build_server(strict, sessions, clock=clock, hasher=hasher)
    server.start()
    try:
        with Client(f"127.0.0.1:{server.port}") as client:
            client.auth.register(unique_email(), PASSWORD, "Ada")
            with pytest.raises(RateLimited) as caught:
                client.auth.login(unique_email(), PASSWORD)
    finally:
        server.stop(None)
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 0
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
