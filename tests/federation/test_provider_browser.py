"""Sign-in with an OpenID Connect provider on the /device page, in a real browser: headless
Chromium (tests/browser_support.py) against the gateway and gRPC server on loopback, on both
backends, with panva's certified `oidc-provider` as the provider (tests/federation/
oidc_provider.py).

The happy paths end to end: a first sign-in creates the account and approves the real CLI's
device login (`luman whoami` then works); an existing password account is linked once its
password is given. Then every way the sign-in must fail without signing anyone in: a tampered
ID token, a changed nonce, a replayed callback, an expired sign-in, a code issued for another
redirect URI, an email the provider has not verified, the person cancelling, the provider
being down. Each failure shows its page (HTTP status, title, one plain sentence, the way back)
and leaves its call in the request log, with its status and ErrorInfo reason.

The provider has to know Luman's redirect URI before it starts, and Luman the provider's issuer
before the server is built: so the module picks the gateway's port first (outside the
ephemeral range, where no outgoing connection takes it meanwhile), registers
http://127.0.0.1:<port>/device/providers/corp/callback with one provider for the module, and
each test binds its own gateway to that port. The server's clock is a MovingClock: the ID
tokens' iat and exp are real time.

Screenshots go to test-artifacts/screenshots/provider-*.png: the sign-in view with the
provider's button, the approval after a provider sign-in, the link form, a failure page.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import socket
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, BrowserContext, Page, expect

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import App
from luman.server.config import Settings
from luman.server.db.models import RequestLog, User
from luman.server.db.session import Sessions
from luman.server.federation.providers import ProviderConfig
from luman.server.gateway import GatewayServer, build_gateway
from luman.server.gateway.device_page import SESSION_COOKIE
from luman.server.gateway.provider_pages import LINK_REFUSED, NOT_THIS_BROWSER, STATE_COOKIE
from tests.browser_support import (
    MovingClock,
    cli_environment,
    cli_login,
    cli_whoami,
    launched_chromium,
    loopback_context,
    screenshot,
)
from tests.federation.oidc_provider import OidcClient, OidcProvider, running_oidc_provider
from tests.server.device_login_support import start
from tests.support import PASSWORD, bearer, register, unique_email

Stub = auth_service_pb2_grpc.AuthServiceStub
PROVIDER = "corp"
DISPLAY_NAME = "Corp SSO"
CONTINUE = f"Continue with {DISPLAY_NAME}"
CLIENT_ID = "luman-corp"
CLIENT_SECRET = secrets.token_urlsafe(24)
CALLBACK_PATH = f"/device/providers/{PROVIDER}/callback"
# Another application of the same client's: registered with the provider, never dialled (the
# browser's route answers it).
ELSEWHERE = "http://127.0.0.1:9/other-app/callback"
COMPLETE = "/luman.auth.v1.AuthService/CompleteProviderLogin"
START = "/luman.auth.v1.AuthService/StartProviderLogin"
TIMEOUT_MS = 15_000
# Below Linux's default ephemeral range (32768-60999): the kernel gives none of these to an
# outgoing connection or a port-0 bind, so the port stays free between the module's tests.
PORTS = range(20_000, 32_000)

# The failure pages' plain sentences (provider_pages.py), as the person reads them.
NOT_VERIFIED = (
    f"{DISPLAY_NAME}'s answer could not be verified, so you were not signed in. Start again, "
    "or sign in another way."
)
ALREADY_USED = (
    "This sign-in link was already used, or is not valid. Nothing was changed. Start again."
)
TOOK_TOO_LONG = "This sign-in took too long. Start again."
NOT_ACCEPTED = (
    f"{DISPLAY_NAME} did not accept this sign-in, so you were not signed in. Start again."
)
NO_VERIFIED_EMAIL = (
    f"{DISPLAY_NAME} has no verified email address for your account, so it cannot sign you in "
    f"here. Verify your email address at {DISPLAY_NAME}, then try again."
)
CANCELLED = f"You cancelled the sign-in at {DISPLAY_NAME}. Nothing was changed."
NOT_RESPONDING = (
    f"{DISPLAY_NAME} is not responding right now. Try again in a few minutes, or sign in "
    "another way."
)


def _free_port() -> int:
    candidates = random.sample(PORTS, 50)
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port among {candidates}")


@pytest.fixture(scope="module")
def port() -> int:
    """The gateway's port, for every test of the module."""
    return _free_port()


@pytest.fixture(scope="module")
def provider(port: int) -> Iterator[OidcProvider]:
    callback = f"http://127.0.0.1:{port}{CALLBACK_PATH}"
    client = OidcClient(CLIENT_ID, CLIENT_SECRET, [callback, ELSEWHERE])
    with running_oidc_provider([client]) as op:
        yield op


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
def clock() -> MovingClock:
    return MovingClock()


@pytest.fixture
def settings(settings: Settings, provider: OidcProvider, port: int) -> Settings:
    corp = ProviderConfig(
        id=PROVIDER,
        kind="oidc",
        display_name=DISPLAY_NAME,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        issuer=provider.issuer,
        scopes=("openid", "email", "profile"),
    )
    return dataclasses.replace(
        settings,
        identity_providers=(corp,),
        public_url=f"http://127.0.0.1:{port}",
        http_port=port,
        device_poll_interval=1,  # the real CLI below polls in real time
    )


@pytest.fixture
def gateway(settings: Settings, sessions: Sessions, app: App) -> Iterator[GatewayServer]:
    server = build_gateway(settings, sessions, app)
    server.start()
    yield server
    server.stop(None)


@pytest.fixture
def base(gateway: GatewayServer, settings: Settings) -> str:
    assert gateway.port == settings.http_port
    return settings.public_url


@pytest.fixture
def page(browser: Browser, base: str) -> Iterator[Page]:
    """A fresh context (no cookies, no provider session) per test, loopback only, failing on
    any Content Security Policy violation."""
    context = loopback_context(browser, viewport={"width": 760, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on(
        "console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None
    )
    yield tab
    context.close()
    assert errors == []


# -- steps -----------------------------------------------------------------------------------


def _shot(page: Page, name: str) -> None:
    screenshot(page, f"provider-{name}")


def _continue_with_provider(page: Page, provider: OidcProvider, *, shot: bool = False) -> None:
    """On Luman's sign-in view: the provider's button, then its login page."""
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    button = page.get_by_role("link", name=CONTINUE)
    expect(button).to_be_visible()
    if shot:
        _shot(page, "sign-in")
    button.click()
    page.wait_for_url(f"{provider.issuer}/interaction/**")


def _sign_in_at_provider(page: Page, provider: OidcProvider, login: str) -> None:
    """The provider's login page, then its consent page; back to Luman afterwards."""
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill("any password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Authorize")).to_be_visible()
    page.get_by_role("button", name="Continue").click()


def _through_provider(page: Page, provider: OidcProvider, login: str, base: str) -> None:
    _continue_with_provider(page, provider)
    _sign_in_at_provider(page, provider, login)
    page.wait_for_url(f"{base}/**")


def _failure_page(
    page: Page, status: int, title: str, sentence: str, *, back: str = "/device"
) -> None:
    """A sign-in that did not happen: its HTTP status, title, one plain sentence, the way
    back, and nobody signed in on it."""
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    # The document's own status, at the end of whatever redirects led here.
    served = page.evaluate("performance.getEntriesByType('navigation')[0].responseStatus")
    assert served == status, page.url
    expect(page.locator("main .lead")).to_have_text(sentence)
    expect(page.get_by_role("link", name="Back to sign-in")).to_have_attribute("href", back)
    expect(page.get_by_text("Signed in as")).to_have_count(0)


def _session_token(context: BrowserContext) -> str | None:
    for cookie in context.cookies():
        if cookie.get("name") == SESSION_COOKIE and cookie.get("value"):
            return cookie.get("value")
    return None


def _assert_not_signed_in(page: Page, base: str) -> None:
    assert _session_token(page.context) is None
    page.goto(f"{base}/device")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("link", name=CONTINUE)).to_be_visible()


def _assert_signed_in_as(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/device")
    expect(page.get_by_role("heading", name="Connect a terminal")).to_be_visible()
    expect(page.locator(".who")).to_have_text(f"Signed in as {email}")


def _user(sessions: Sessions, email: str) -> User | None:
    with sessions.read() as session:
        return session.scalars(sa.select(User).where(User.email == email)).one_or_none()


def _logged(app: App, sessions: Sessions, method: str = COMPLETE) -> list[str]:
    """The status (and ErrorInfo reason, after a space) of each CompleteProviderLogin call
    (or `method`'s) in the request log, oldest first, each the browser's (its address and user
    agent: the page makes the call in process)."""
    assert app.request_log is not None
    assert app.request_log.flush(timeout=10)
    with sessions.read() as session:
        rows = list(
            session.scalars(
                sa.select(RequestLog).where(RequestLog.method == method).order_by(RequestLog.id)
            )
        )
    assert [(r.client_ip, "HeadlessChrome/" in r.user_agent) for r in rows] == [
        ("127.0.0.1", True)
    ] * len(rows), [(r.client_ip, r.user_agent) for r in rows]
    return [f"{row.status} {row.reason}" if row.reason else row.status for row in rows]


def _start_rewritten(page: Page, provider: OidcProvider, base: str, **changes: str) -> str:
    """Start a sign-in as the provider's button does, in this browser (its APIRequestContext
    shares the cookies: the state cookie lands), then go to the provider with these query
    parameters of Luman's authorization request changed. Returns the request as Luman made it.

    (Not page.route: a route sees only the first URL of a redirect chain, here /start.)"""
    started = page.request.get(f"{base}/device/providers/{PROVIDER}/start", max_redirects=0)
    assert started.status == 303, started.text()
    original = started.headers["location"]
    (cookie,) = [c for c in page.context.cookies() if c.get("name") == STATE_COOKIE]
    # Sent back by the provider's cross-site redirect (Lax), to the callback only, never
    # readable by a script.
    assert (cookie.get("sameSite"), cookie.get("path"), cookie.get("httpOnly")) == (
        "Lax",
        "/device/providers",
        True,
    )
    parts = urllib.parse.urlsplit(original)
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert all(query.get(name) not in ("", value) for name, value in changes.items()), query
    page.goto(
        urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query | changes)))
    )
    page.wait_for_url(f"{provider.issuer}/interaction/**")
    return original


# -- the happy paths -------------------------------------------------------------------------


def test_first_sign_in_creates_the_account_and_approves_the_cli(
    page: Page, provider: OidcProvider, app: App, sessions: Sessions, base: str, tmp_path: Path
) -> None:
    email = unique_email("ada")
    env = cli_environment(tmp_path / "config")
    command = [sys.executable, "-m", "luman.cli", "--api-url", f"127.0.0.1:{app.port}"]
    with cli_login(command, env, tmp_path / "login.err") as login:
        started = login.started
        assert started["verification_uri_complete"].startswith(f"{base}/device?")
        page.goto(started["verification_uri_complete"])
        expect(page.locator(".code-inline")).to_have_text(started["user_code"])
        _continue_with_provider(page, provider, shot=True)
        _sign_in_at_provider(page, provider, email)
        # Back on Luman, signed in: straight to the code's approval.
        expect(page.get_by_role("heading", name="Approve this device?")).to_be_visible()
        assert page.url.startswith(f"{base}/device?user_code=")
        expect(page.locator(".code-big")).to_have_text(started["user_code"])
        expect(page.locator(".who")).to_have_text(f"Signed in as {email}")
        _shot(page, "approve")
        page.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("heading", name="Device approved")).to_be_visible()
    assert email in login.output
    assert cli_whoami(command, env)["email"] == email

    user = _user(sessions, email)
    assert user is not None
    assert user.email_verify_time is not None  # the provider vouched for it
    assert not user.password_hash  # made by the provider: no password
    assert _logged(app, sessions) == ["OK"]


def test_an_existing_password_account_is_linked_with_its_password(
    page: Page, provider: OidcProvider, auth: Stub, app: App, sessions: Sessions, base: str
) -> None:
    email = unique_email("grace")
    register(auth, email)
    device = start(auth)  # from a device login: the link leads on to its approval

    page.goto(device.verification_uri_complete)
    _through_provider(page, provider, email, base)
    expect(page.get_by_role("heading", name="Link your account")).to_be_visible()
    expect(page.locator("main .lead")).to_contain_text(
        f"An account with the email {email} already exists."
    )
    _shot(page, "link")
    assert _session_token(page.context) is None

    page.get_by_label("Password").fill(PASSWORD + "wrong")
    page.get_by_role("button", name="Link and sign in").click()
    expect(page.get_by_role("heading", name="Link your account")).to_be_visible()
    expect(page.get_by_role("alert")).to_have_text(LINK_REFUSED)
    assert _session_token(page.context) is None

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Link and sign in").click()
    expect(page.get_by_role("heading", name="Approve this device?")).to_be_visible()
    expect(page.locator(".code-big")).to_have_text(device.user_code)
    expect(page.locator(".who")).to_have_text(f"Signed in as {email}")

    token = _session_token(page.context)
    assert token is not None
    listed = auth.ListIdentities(
        auth_service_pb2.ListIdentitiesRequest(), metadata=bearer(token)
    ).identities
    assert [(i.provider, i.provider_display_name, i.email) for i in listed] == [
        (PROVIDER, DISPLAY_NAME, email)
    ]
    user = _user(sessions, email)
    assert user is not None
    assert user.password_hash  # still the password account

    # Linked: signed out, the provider's button signs straight in (the provider remembers
    # this browser's sign-in and consent, so it redirects back at once).
    page.get_by_role("button", name="Sign out").click()
    _assert_not_signed_in(page, base)
    page.get_by_role("link", name=CONTINUE).click()
    page.wait_for_url(f"{base}/device")
    expect(page.locator(".who")).to_have_text(f"Signed in as {email}")
    assert _logged(app, sessions) == ["OK", "OK"]


# -- answers that must not sign in ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["signature", "none"])
def test_a_tampered_id_token_does_not_sign_in(
    page: Page,
    provider: OidcProvider,
    auth: Stub,
    app: App,
    sessions: Sessions,
    base: str,
    mode: str,
) -> None:
    email = unique_email("mallory")
    device = start(auth)  # from a device login: the way back keeps its code
    page.goto(device.verification_uri_complete)
    _continue_with_provider(page, provider)
    provider.tamper(mode)
    try:
        _sign_in_at_provider(page, provider, email)
        page.wait_for_url(f"{base}/**")
        back = f"/device?user_code={urllib.parse.quote(device.user_code)}"
        _failure_page(page, 502, "Sign-in not verified", NOT_VERIFIED, back=back)
        if mode == "signature":
            _shot(page, "failure")
    finally:
        provider.tamper(None)
    assert _session_token(page.context) is None
    page.get_by_role("link", name="Back to sign-in").click()
    expect(page.locator(".code-inline")).to_have_text(device.user_code)
    _assert_not_signed_in(page, base)
    assert _user(sessions, email) is None
    assert _logged(app, sessions) == ["UNAUTHENTICATED ID_TOKEN_INVALID"]


def test_a_changed_nonce_does_not_sign_in(
    page: Page,
    provider: OidcProvider,
    app: App,
    sessions: Sessions,
    base: str,
) -> None:
    email = unique_email("eve")
    _start_rewritten(page, provider, base, nonce="chosen-by-eve")
    _sign_in_at_provider(page, provider, email)
    page.wait_for_url(f"{base}/**")
    _failure_page(page, 502, "Sign-in not verified", NOT_VERIFIED)
    _assert_not_signed_in(page, base)
    assert _user(sessions, email) is None
    assert _logged(app, sessions) == ["UNAUTHENTICATED NONCE_MISMATCH"]


def test_a_callback_works_once(
    page: Page, provider: OidcProvider, app: App, sessions: Sessions, base: str
) -> None:
    email = unique_email("bob")
    callbacks: list[str] = []
    page.on(
        "request",
        lambda r: callbacks.append(r.url) if r.url.startswith(base + CALLBACK_PATH) else None,
    )
    page.goto(f"{base}/device")
    _through_provider(page, provider, email, base)
    _assert_signed_in_as(page, base, email)
    assert len(callbacks) == 1
    session = _session_token(page.context)

    # The same callback again: its state cookie is gone, so the page refuses it unasked.
    page.goto(callbacks[0])
    _failure_page(page, 400, "Sign-in not started here", NOT_THIS_BROWSER)
    # With the state cookie put back (it leaked, say), the server refuses the spent state.
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callbacks[0]).query))["state"]
    page.context.add_cookies(
        [{"name": STATE_COOKIE, "value": state, "url": f"{base}/device/providers/"}]
    )
    page.goto(callbacks[0])
    _failure_page(page, 400, "Sign-in link not valid", ALREADY_USED)
    # The failures changed nothing: the session is the first sign-in's.
    assert _session_token(page.context) == session
    _assert_signed_in_as(page, base, email)
    assert _logged(app, sessions) == ["OK", "FAILED_PRECONDITION PROVIDER_LOGIN_STATE_INVALID"]


def test_a_sign_in_that_took_too_long(
    page: Page,
    provider: OidcProvider,
    clock: MovingClock,
    app: App,
    sessions: Sessions,
    base: str,
) -> None:
    email = unique_email("slow")
    page.goto(f"{base}/device")
    _continue_with_provider(page, provider)
    clock.advance(minutes=10, seconds=1)  # PROVIDER_LOGIN_TTL is 10 minutes
    _sign_in_at_provider(page, provider, email)
    page.wait_for_url(f"{base}/**")
    _failure_page(page, 400, "Sign-in expired", TOOK_TOO_LONG)
    _assert_not_signed_in(page, base)
    assert _user(sessions, email) is None
    assert _logged(app, sessions) == ["FAILED_PRECONDITION PROVIDER_LOGIN_EXPIRED"]


def test_a_code_issued_for_another_redirect_uri_is_refused(
    page: Page,
    provider: OidcProvider,
    app: App,
    sessions: Sessions,
    base: str,
) -> None:
    """Luman's own authorization request (its state, nonce and PKCE challenge), with only the
    redirect URI changed to another one of the client's: the code comes back elsewhere, and
    presented at Luman's callback the provider refuses to redeem it (RFC 6749 §4.1.3)."""
    email = unique_email("trudy")
    page.route(
        lambda url: url.startswith(f"{ELSEWHERE}?"),
        lambda route: route.fulfill(status=200, content_type="text/plain", body="elsewhere"),
    )
    original = _start_rewritten(page, provider, base, redirect_uri=ELSEWHERE)
    assert f"redirect_uri={urllib.parse.quote(base + CALLBACK_PATH, safe='')}" in original
    _sign_in_at_provider(page, provider, email)
    page.wait_for_url(lambda url: url.startswith(f"{ELSEWHERE}?"))
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).query))
    assert query["code"]

    # This browser started the sign-in: its state cookie matches, the server asks the provider.
    page.goto(f"{base}{CALLBACK_PATH}?{urllib.parse.urlencode(query)}")
    _failure_page(page, 400, "Sign-in not accepted", NOT_ACCEPTED)
    _assert_not_signed_in(page, base)
    assert _user(sessions, email) is None
    assert _logged(app, sessions) == ["UNAUTHENTICATED CODE_REJECTED"]


def test_an_email_the_provider_has_not_verified_does_not_sign_in(
    page: Page, provider: OidcProvider, app: App, sessions: Sessions, base: str
) -> None:
    login = f"unverified-{secrets.token_hex(4)}"
    page.goto(f"{base}/device")
    _through_provider(page, provider, login, base)
    _failure_page(page, 403, "No verified email address", NO_VERIFIED_EMAIL)
    _assert_not_signed_in(page, base)
    assert _user(sessions, f"{login}@example.test") is None
    assert _logged(app, sessions) == ["FAILED_PRECONDITION PROVIDER_EMAIL_NOT_VERIFIED"]


def test_cancelling_at_the_provider(
    page: Page, provider: OidcProvider, app: App, sessions: Sessions, base: str
) -> None:
    page.goto(f"{base}/device")
    _continue_with_provider(page, provider)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_role("link", name="Cancel").click()
    page.wait_for_url(f"{base}/**")
    _failure_page(page, 403, "Sign-in cancelled", CANCELLED)
    _assert_not_signed_in(page, base)
    assert _logged(app, sessions) == ["PERMISSION_DENIED PROVIDER_ACCESS_DENIED"]


def test_a_provider_that_is_down(
    page: Page, provider: OidcProvider, app: App, sessions: Sessions, base: str
) -> None:
    page.goto(f"{base}/device")
    provider.set_down(True)
    try:
        with page.expect_response(lambda r: r.url.startswith(f"{base}/device/providers/")) as got:
            page.get_by_role("link", name=CONTINUE).click()
        assert got.value.headers.get("retry-after") == "30"  # PROVIDER_RETRY_SECONDS
        _failure_page(page, 503, f"{DISPLAY_NAME} is not responding", NOT_RESPONDING)
    finally:
        provider.set_down(False)
    assert not any(c.get("name") == STATE_COOKIE for c in page.context.cookies())
    _assert_not_signed_in(page, base)
    assert _logged(app, sessions, START) == ["UNAVAILABLE PROVIDER_UNAVAILABLE"]
    assert _logged(app, sessions) == []
