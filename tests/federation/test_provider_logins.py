"""Sign-in through an identity provider over gRPC, end to end on both backends: the real
server, and GitHub's documented OAuth endpoints served by a loopback fake
(tests/federation/github_fake.py). The browser's part (following the authorization URL and
clicking "Authorize") is the fake's approve(); tests/federation/test_provider_browser.py does
it in Chromium against a certified OpenID Connect provider.
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse
from collections.abc import Iterator

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.errors import PermissionDeniedError
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.federation.identity import ProviderIdentity
from luman.server.federation.logins import checked_identity
from luman.server.federation.providers import ProviderConfig
from tests.federation.github_fake import GitHubEmail, GitHubFake, GitHubUser
from tests.federation.github_support import (
    CALLBACK,
    PUBLIC_URL,
    ada,
    callback_query,
    callback_url,
    github_config,
    sign_in,
)
from tests.support import PASSWORD, FakeClock, bearer, get_me, register, rich_error

Stub = auth_service_pb2_grpc.AuthServiceStub


@pytest.fixture
def github() -> Iterator[GitHubFake]:
    with GitHubFake(callback_url=CALLBACK) as fake:
        yield fake


@pytest.fixture
def settings(settings: Settings, github: GitHubFake) -> Settings:
    return dataclasses.replace(
        settings, public_url=PUBLIC_URL, identity_providers=(github_config(github),)
    )


def failure(call: object) -> tuple[grpc.StatusCode, str]:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = rich_error(caught.value)
    return error.code, error.reason


def test_providers_are_listed_with_the_password_setting(auth: Stub) -> None:
    listed = auth.ListIdentityProviders(auth_service_pb2.ListIdentityProvidersRequest())
    assert [(p.id, p.display_name, p.kind) for p in listed.providers] == [
        ("github", "GitHub", "github")
    ]
    assert listed.password_login is True


def test_first_sign_in_creates_a_verified_account_and_the_next_signs_into_it(
    auth: Stub, github: GitHubFake
) -> None:
    ada(github)
    first = sign_in(auth, github, user_code="bcdf-ghjk")
    assert first.WhichOneof("result") == "sign_in"
    assert first.sign_in.account_created
    assert first.user_code == "BCDFGHJK"
    user = first.sign_in.user
    assert (user.email, user.name, user.email_verified) == (
        "ada@example.com",
        "Ada Lovelace",
        True,
    )
    # The authorization request carried PKCE S256 and the server's own redirect URI.
    query = github.last_authorize_query
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == CALLBACK
    assert github.token_requests[-1]["code_verifier"]
    # The tokens are an ordinary sign-in's.
    assert get_me(auth, first.sign_in.tokens.access_token).user.id == user.id
    listed = auth.ListIdentities(
        auth_service_pb2.ListIdentitiesRequest(),
        metadata=bearer(first.sign_in.tokens.access_token),
    ).identities
    assert [(i.provider, i.provider_display_name, i.email, i.username) for i in listed] == [
        ("github", "GitHub", "ada@example.com", "ada")
    ]

    again = sign_in(auth, github)
    assert not again.sign_in.account_created
    assert again.sign_in.user.id == user.id
    # The account has no password: none signs in, and ChangePassword says why.
    code, reason = failure(
        lambda: auth.Login(auth_service_pb2.LoginRequest(email=user.email, password=PASSWORD))
    )
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")
    code, reason = failure(
        lambda: auth.ChangePassword(
            auth_service_pb2.ChangePasswordRequest(
                current_password=PASSWORD, new_password=PASSWORD + "!"
            ),
            metadata=bearer(again.sign_in.tokens.access_token),
        )
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NO_PASSWORD")


def test_a_state_works_once(auth: Stub, github: GitHubFake) -> None:
    ada(github)
    started = auth.StartProviderLogin(auth_service_pb2.StartProviderLoginRequest(provider="github"))
    back = callback_query(github.approve(started.authorization_url))
    request = auth_service_pb2.CompleteProviderLoginRequest(
        provider="github", state=back["state"], code=back["code"]
    )
    assert auth.CompleteProviderLogin(request).WhichOneof("result") == "sign_in"
    assert failure(lambda: auth.CompleteProviderLogin(request)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROVIDER_LOGIN_STATE_INVALID",
    )
    made_up = auth_service_pb2.CompleteProviderLoginRequest(
        provider="github", state="x" * 43, code=back["code"]
    )
    assert failure(lambda: auth.CompleteProviderLogin(made_up))[1] == (
        "PROVIDER_LOGIN_STATE_INVALID"
    )


def test_an_expired_state_is_refused(auth: Stub, github: GitHubFake, clock: FakeClock) -> None:
    ada(github)
    started = auth.StartProviderLogin(auth_service_pb2.StartProviderLoginRequest(provider="github"))
    back = callback_query(github.approve(started.authorization_url))
    clock.advance(minutes=10, seconds=1)
    assert failure(
        lambda: auth.CompleteProviderLogin(
            auth_service_pb2.CompleteProviderLoginRequest(
                provider="github", state=back["state"], code=back["code"]
            )
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_LOGIN_EXPIRED")


def test_a_wrong_code_is_refused_by_the_provider(auth: Stub, github: GitHubFake) -> None:
    ada(github)
    started = auth.StartProviderLogin(auth_service_pb2.StartProviderLoginRequest(provider="github"))
    back = callback_query(github.approve(started.authorization_url))
    assert failure(
        lambda: auth.CompleteProviderLogin(
            auth_service_pb2.CompleteProviderLoginRequest(
                provider="github", state=back["state"], code=back["code"] + "x"
            )
        )
    ) == (grpc.StatusCode.UNAUTHENTICATED, "CODE_REJECTED")


def test_declined_consent_and_provider_errors(auth: Stub, github: GitHubFake) -> None:
    ada(github)
    started = auth.StartProviderLogin(auth_service_pb2.StartProviderLoginRequest(provider="github"))
    back = callback_query(github.cancel(started.authorization_url))
    assert back["error"] == "access_denied"
    assert failure(
        lambda: auth.CompleteProviderLogin(
            auth_service_pb2.CompleteProviderLoginRequest(
                provider="github",
                state=back["state"],
                error=back["error"],
                error_description=back.get("error_description", ""),
            )
        )
    ) == (grpc.StatusCode.PERMISSION_DENIED, "PROVIDER_ACCESS_DENIED")

    started = auth.StartProviderLogin(auth_service_pb2.StartProviderLoginRequest(provider="github"))
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(started.authorization_url).query)["state"]
    assert failure(
        lambda: auth.CompleteProviderLogin(
            auth_service_pb2.CompleteProviderLoginRequest(
                provider="github", state=state[0], error="invalid_scope"
            )
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_ERROR")


def test_an_unverified_email_creates_nothing(auth: Stub, github: GitHubFake) -> None:
    ada(github, verified=False)
    code, reason = failure(lambda: sign_in(auth, github))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_EMAIL_NOT_VERIFIED")
    # No account was made with that address: registering it works.
    register(auth, email="ada@example.com")


def test_an_existing_password_account_is_linked_only_with_its_password(
    auth: Stub, github: GitHubFake
) -> None:
    existing = register(auth, email="ada@example.com", name="Ada L.")
    ada(github)
    first = sign_in(auth, github, user_code="BCDFGHJK")
    assert first.WhichOneof("result") == "link_required"
    assert first.link_required.email == "ada@example.com"
    link_token = first.link_required.link_token

    def link(password: str) -> auth_service_pb2.LinkProviderIdentityResponse:
        response: auth_service_pb2.LinkProviderIdentityResponse = auth.LinkProviderIdentity(
            auth_service_pb2.LinkProviderIdentityRequest(link_token=link_token, password=password)
        )
        return response

    assert failure(lambda: link("not the password")) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    assert not existing.user.email_verified
    linked = link(PASSWORD)
    assert linked.user.id == existing.user.id
    # The password proved the account, GitHub the address.
    assert linked.user.email_verified
    assert linked.user_code == "BCDFGHJK"
    assert (linked.identity.provider, linked.identity.username) == ("github", "ada")
    assert get_me(auth, linked.tokens.access_token).user.id == existing.user.id
    # Once: the token is spent.
    assert failure(lambda: link(PASSWORD)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "LINK_TOKEN_INVALID",
    )
    # From now on GitHub signs straight in, and the password still works.
    again = sign_in(auth, github)
    assert again.sign_in.user.id == existing.user.id
    assert not again.sign_in.account_created
    auth.Login(auth_service_pb2.LoginRequest(email="ada@example.com", password=PASSWORD))


def test_a_link_token_stops_after_five_wrong_passwords(auth: Stub, github: GitHubFake) -> None:
    register(auth, email="ada@example.com")
    ada(github)
    token = sign_in(auth, github).link_required.link_token
    for _ in range(5):
        assert failure(
            lambda: auth.LinkProviderIdentity(
                auth_service_pb2.LinkProviderIdentityRequest(link_token=token, password="guess1234")
            )
        )[1] == ("INVALID_CREDENTIALS")
    assert failure(
        lambda: auth.LinkProviderIdentity(
            auth_service_pb2.LinkProviderIdentityRequest(link_token=token, password=PASSWORD)
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "LINK_TOKEN_INVALID")


def test_unlink_keeps_a_way_to_sign_in(auth: Stub, github: GitHubFake) -> None:
    ada(github)
    signed_in = sign_in(auth, github).sign_in
    token = signed_in.tokens.access_token
    identity = auth.ListIdentities(
        auth_service_pb2.ListIdentitiesRequest(), metadata=bearer(token)
    ).identities[0]

    def unlink(identity_id: str) -> None:
        auth.UnlinkIdentity(
            auth_service_pb2.UnlinkIdentityRequest(identity_id=identity_id), metadata=bearer(token)
        )

    # GitHub is the account's only way in: no password.
    assert failure(lambda: unlink(identity.id)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "LAST_SIGN_IN_METHOD",
    )
    assert failure(lambda: unlink("7d5a1b39-0c8e-4a8e-9d55-3b0b8f3f0d11")) == (
        grpc.StatusCode.NOT_FOUND,
        "IDENTITY_NOT_FOUND",
    )
    assert failure(lambda: unlink("nope")) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


def test_unlink_with_a_password_left(auth: Stub, github: GitHubFake) -> None:
    register(auth, email="ada@example.com")
    ada(github)
    token = sign_in(auth, github).link_required.link_token
    linked = auth.LinkProviderIdentity(
        auth_service_pb2.LinkProviderIdentityRequest(link_token=token, password=PASSWORD)
    )
    access = linked.tokens.access_token
    auth.UnlinkIdentity(
        auth_service_pb2.UnlinkIdentityRequest(identity_id=linked.identity.id),
        metadata=bearer(access),
    )
    assert not auth.ListIdentities(
        auth_service_pb2.ListIdentitiesRequest(), metadata=bearer(access)
    ).identities
    # Unlinked: GitHub no longer signs in as the account; it asks to link again.
    assert sign_in(auth, github).WhichOneof("result") == "link_required"


def test_allowed_domains(
    settings: Settings,
    sessions: Sessions,
    clock: FakeClock,
    hasher: PasswordHasher,
    github: GitHubFake,
) -> None:
    limited = dataclasses.replace(
        settings,
        identity_providers=(github_config(github, allowed_domains=frozenset({"corp.example"})),),
    )
    server = build_server(limited, sessions, clock=clock, hasher=hasher)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            auth = Stub(channel)
            ada(github)
            assert failure(lambda: sign_in(auth, github)) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "EMAIL_DOMAIN_NOT_ALLOWED",
            )
            github.users.clear()
            github.signed_in = ""
            ada(github, email="ada@corp.example")
            assert sign_in(auth, github).sign_in.user.email == "ada@corp.example"
    finally:
        server.stop(None)


def test_a_provider_that_is_down_answers_unavailable_with_retry(
    auth: Stub, github: GitHubFake, caplog: pytest.LogCaptureFixture
) -> None:
    ada(github)
    caplog.set_level(logging.INFO, logger="luman.server.federation.logins")
    for _ in range(2):
        started = auth.StartProviderLogin(
            auth_service_pb2.StartProviderLoginRequest(provider="github")
        )
        back = callback_query(github.approve(started.authorization_url))
        github.down = True
        with pytest.raises(grpc.RpcError) as caught:
            auth.CompleteProviderLogin(
                auth_service_pb2.CompleteProviderLoginRequest(
                    provider="github", state=back["state"], code=back["code"]
                )
            )
        github.down = False
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "PROVIDER_UNAVAILABLE")
        assert error.retry_delay_seconds is not None
        assert error.retry_delay_seconds > 0
    assert sign_in(auth, github).WhichOneof("result") == "sign_in"
    # One warning for the outage, however many sign-ins it refused, and one line at its end.
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("federation.logins")]
    assert [line.split(":")[0] for line in lines] == [
        "identity provider github unavailable",
        "identity provider github answers again",
    ]


@pytest.fixture
def passwordless(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[App]:
    server = build_server(
        dataclasses.replace(settings, password_login=False), sessions, clock=clock, hasher=hasher
    )
    server.start()
    yield server
    server.stop(None)


def test_password_login_off(auth: Stub, passwordless: App, github: GitHubFake) -> None:
    # An account registered while passwords were on, on the same database.
    register(auth, email="ada@example.com")
    with grpc.insecure_channel(f"127.0.0.1:{passwordless.port}") as channel:
        off = Stub(channel)
        listed = off.ListIdentityProviders(auth_service_pb2.ListIdentityProvidersRequest())
        assert listed.password_login is False
        for call in (
            lambda: off.Login(
                auth_service_pb2.LoginRequest(email="ada@example.com", password=PASSWORD)
            ),
            lambda: off.Register(
                auth_service_pb2.RegisterRequest(
                    email="grace@example.com", password=PASSWORD, name="Grace"
                )
            ),
            lambda: off.CliLogin(
                auth_service_pb2.CliLoginRequest(email="ada@example.com", password=PASSWORD)
            ),
        ):
            assert failure(call) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "PASSWORD_LOGIN_DISABLED",
            )
        # Linking still takes the password once: it is the proof that the account is Ada's.
        ada(github)
        token = sign_in(off, github).link_required.link_token
        linked = off.LinkProviderIdentity(
            auth_service_pb2.LinkProviderIdentityRequest(link_token=token, password=PASSWORD)
        )
        # With passwords off, GitHub is now the only way in.
        assert failure(
            lambda: off.UnlinkIdentity(
                auth_service_pb2.UnlinkIdentityRequest(identity_id=linked.identity.id),
                metadata=bearer(linked.tokens.access_token),
            )
        ) == (grpc.StatusCode.FAILED_PRECONDITION, "LAST_SIGN_IN_METHOD")


@pytest.mark.shape_check
def test_bad_input_names_the_field(auth: Stub) -> None:
    def violations(call: object) -> dict[str, str]:
        assert callable(call)
        with pytest.raises(grpc.RpcError) as caught:
            call()
        error = rich_error(caught.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
        return error.field_violations

    assert "provider" in violations(
        lambda: auth.StartProviderLogin(auth_service_pb2.StartProviderLoginRequest())
    )
    assert "user_code" in violations(
        lambda: auth.StartProviderLogin(
            auth_service_pb2.StartProviderLoginRequest(provider="github", user_code="AEIOU")
        )
    )
    assert set(
        violations(
            lambda: auth.CompleteProviderLogin(
                auth_service_pb2.CompleteProviderLoginRequest(provider="github")
            )
        )
    ) == {"state", "code"}
    assert set(
        violations(
            lambda: auth.LinkProviderIdentity(auth_service_pb2.LinkProviderIdentityRequest())
        )
    ) == {"link_token", "password"}


def test_an_unknown_provider_is_not_found(auth: Stub) -> None:
    assert failure(
        lambda: auth.StartProviderLogin(
            auth_service_pb2.StartProviderLoginRequest(provider="gitlab")
        )
    ) == (grpc.StatusCode.NOT_FOUND, "PROVIDER_NOT_FOUND")


@pytest.fixture
def enterprise() -> Iterator[GitHubFake]:
    """A second GitHub (an Enterprise Server) configured as provider "ghe"."""
    with GitHubFake(callback_url=callback_url("ghe")) as fake:
        yield fake


@pytest.fixture
def two_githubs(
    settings: Settings,
    sessions: Sessions,
    clock: FakeClock,
    hasher: PasswordHasher,
    github: GitHubFake,
    enterprise: GitHubFake,
) -> Iterator[Stub]:
    configured = dataclasses.replace(
        settings,
        identity_providers=(
            github_config(github),
            github_config(enterprise, id="ghe", display_name="GitHub Enterprise"),
        ),
    )
    server = build_server(configured, sessions, clock=clock, hasher=hasher)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield Stub(channel)
    finally:
        server.stop(None)


def test_an_account_made_by_one_provider_is_not_taken_by_another(
    two_githubs: Stub, github: GitHubFake, enterprise: GitHubFake
) -> None:
    auth = two_githubs
    ada(github)
    made = sign_in(auth, github).sign_in
    assert made.account_created
    # Another provider's account with the same verified email: the account has no password to
    # link with, so the person is told which provider it signs in with.
    ada(enterprise)
    code, reason = failure(lambda: sign_in(auth, enterprise, provider="ghe"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_USES_OTHER_PROVIDER")
    # The two GitHubs' user ids are the same number: one provider's identity never stands for
    # the other's.
    assert sign_in(auth, github).sign_in.user.id == made.user.id


def test_a_state_belongs_to_its_provider(
    two_githubs: Stub, github: GitHubFake, enterprise: GitHubFake
) -> None:
    auth = two_githubs
    ada(github)
    started = auth.StartProviderLogin(auth_service_pb2.StartProviderLoginRequest(provider="github"))
    back = callback_query(github.approve(started.authorization_url))
    other = auth_service_pb2.CompleteProviderLoginRequest(
        provider="ghe", state=back["state"], code=back["code"]
    )
    assert failure(lambda: auth.CompleteProviderLogin(other)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROVIDER_LOGIN_STATE_INVALID",
    )
    # Not spent by the wrong provider: its own completes.
    right = auth_service_pb2.CompleteProviderLoginRequest(
        provider="github", state=back["state"], code=back["code"]
    )
    assert auth.CompleteProviderLogin(right).sign_in.account_created


def test_a_provider_pointed_at_another_issuer_signs_in_none_of_its_old_identities(
    settings: Settings,
    sessions: Sessions,
    clock: FakeClock,
    hasher: PasswordHasher,
    auth: Stub,
    github: GitHubFake,
    enterprise: GitHubFake,
) -> None:
    ada(github)
    first = sign_in(auth, github).sign_in
    # The same provider id, "github", now an Enterprise Server whose user 583231 is someone
    # else (with a verified address of their own).
    enterprise.callback_url = CALLBACK
    enterprise.add_user(
        GitHubUser(id=583231, login="mallory", emails=[GitHubEmail("mallory@example.com", True)])
    )
    moved = dataclasses.replace(settings, identity_providers=(github_config(enterprise),))
    server = build_server(moved, sessions, clock=clock, hasher=hasher)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            other = sign_in(Stub(channel), enterprise).sign_in
    finally:
        server.stop(None)
    assert other.account_created
    assert other.user.id != first.user.id
    assert other.user.email == "mallory@example.com"


@pytest.mark.shape_check
def test_link_passwords_are_checked_like_any_password(auth: Stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        auth.LinkProviderIdentity(
            auth_service_pb2.LinkProviderIdentityRequest(link_token="t" * 43, password="short")
        )
    error = rich_error(caught.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == {"password"}


def test_google_allowed_domains_need_the_workspace_domain_too() -> None:
    google = ProviderConfig(
        id="google",
        kind="google",
        display_name="Google",
        client_id="id",
        client_secret="secret",
        issuer="https://accounts.google.com",
        allowed_domains=frozenset({"corp.example"}),
    )
    staff = ProviderIdentity("1", "ada@corp.example", True, "Ada", "", hosted_domain="corp.example")
    assert checked_identity(google, staff).email == "ada@corp.example"
    # A consumer Google account holding a verified address at the company's domain.
    consumer = dataclasses.replace(staff, hosted_domain="")
    with pytest.raises(PermissionDeniedError) as refused:
        checked_identity(google, consumer)
    assert refused.value.reason == "EMAIL_DOMAIN_NOT_ALLOWED"
