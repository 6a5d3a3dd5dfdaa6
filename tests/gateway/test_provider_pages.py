"""Sign-in through an identity provider on the /device page, over plain HTTP (no browser): the
"Continue with GitHub" link, the state cookie, the redirect to the provider and back, the
"Link your account" form and the failure pages. GitHub is the loopback fake of its OAuth
endpoints (tests/federation/github_fake.py); the test plays the browser, following each
redirect by hand. tests/federation/test_provider_browser.py does it in Chromium.
"""

from __future__ import annotations

import dataclasses
import html
import re
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest

from luman.auth.v1 import auth_service_pb2_grpc
from luman.server.config import Settings
from luman.server.federation.providers import ProviderConfig
from luman.server.gateway import GatewayServer
from luman.server.gateway.device_page import PROVIDERS_ONLY
from luman.server.gateway.device_templates import PROVIDERS_ONLY_NOTE
from luman.server.gateway.policy import PAGE_CSP
from luman.server.gateway.provider_pages import LINK_EXPIRED, LINK_REFUSED, NOT_THIS_BROWSER
from tests.federation.github_fake import GitHubEmail, GitHubFake, GitHubUser
from tests.gateway.device_page_support import alerts, csrf_of
from tests.gateway.helpers import register
from tests.server.device_login_support import poll, start
from tests.support import PASSWORD

Stub = auth_service_pb2_grpc.AuthServiceStub
ADA = "ada@example.com"
START = "/device/providers/github/start"
CALLBACK = "/device/providers/github/callback"
_LEAD = re.compile(r'<p class="lead">(.*?)</p>', re.S)


@pytest.fixture
def github() -> Iterator[GitHubFake]:
    # The callback URL holds the gateway's port: the `http` fixture below sets it.
    with GitHubFake(callback_url="http://127.0.0.1:9/unset") as fake:
        fake.add_user(
            GitHubUser(
                id=583231,
                login="ada",
                name="Ada Lovelace",
                emails=[GitHubEmail(ADA, primary=True, verified=True)],
            )
        )
        yield fake


@pytest.fixture
def password_login() -> bool:
    return True


@pytest.fixture
def provider_login_limit() -> int:
    return 1_000_000


@pytest.fixture
def settings(
    settings: Settings, github: GitHubFake, password_login: bool, provider_login_limit: int
) -> Settings:
    """GitHub (the fake) as the one provider; no PUBLIC_URL, so that the redirect URI is the
    gateway's own address once bound. The test client (127.0.0.1) is a trusted proxy, for
    X-Forwarded-Proto."""
    github_provider = ProviderConfig(
        id="github",
        kind="github",
        display_name="GitHub",
        client_id=github.client_id,
        client_secret=github.client_secret,
        github_url=github.url,
        github_api_url=github.api_url,
        scopes=("read:user", "user:email"),
    )
    return dataclasses.replace(
        settings,
        identity_providers=(github_provider,),
        password_login=password_login,
        provider_login_rate_limit_max_requests=provider_login_limit,
        trusted_proxies=("127.0.0.1/32",),
    )


@pytest.fixture
def http(http: httpx.Client, gateway: GatewayServer, github: GitHubFake) -> httpx.Client:
    github.callback_url = f"http://127.0.0.1:{gateway.port}{CALLBACK}"
    return http


def _set_cookie(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(name + "="):
            return header
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


def _lead(page: httpx.Response) -> str:
    found = _LEAD.search(page.text)
    assert found is not None, page.text
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1)))


def _back_link(page: httpx.Response) -> str:
    found = re.search(r'<a class="button-link" href="([^"]*)">Back to sign-in</a>', page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


def _start(http: httpx.Client, user_code: str = "") -> httpx.Response:
    """Open the sign-in view and follow its "Continue with GitHub" link."""
    page = http.get("/device", params={"user_code": user_code} if user_code else None)
    assert page.status_code == 200, page.text
    found = re.search(r'<a class="button-link provider" href="([^"]*)">', page.text)
    assert found is not None, page.text
    response = http.get(html.unescape(found.group(1)))
    assert response.status_code == 303, response.text
    return response


def _back(http: httpx.Client, location: str, **headers: str) -> httpx.Response:
    """GitHub's redirect back to the gateway, followed as the browser would."""
    parts = urllib.parse.urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}" == str(http.base_url).rstrip("/")
    assert parts.path == CALLBACK
    return http.get(f"{parts.path}?{parts.query}", headers=headers)


def _sign_in_with_github(
    http: httpx.Client, github: GitHubFake, user_code: str = ""
) -> httpx.Response:
    """Continue with GitHub, Authorize there, and come back: the callback's answer."""
    started = _start(http, user_code)
    return _back(http, github.approve(started.headers["location"]))


def test_sign_in_view_offers_each_provider_as_a_link(http: httpx.Client) -> None:
    page = http.get("/device?user_code=BCDF-GHJK")
    assert page.status_code == 200
    link = (
        '<a class="button-link provider" href="/device/providers/github/start?user_code=BCDF-GHJK">'
    )
    assert f"{link}Continue with GitHub</a>" in page.text
    # A link, not a form: form-action 'self' would stop the form post's redirect to GitHub.
    assert 'action="/device/providers' not in page.text
    assert 'action="/device/sign-in"' in page.text  # the password form stays
    assert PROVIDERS_ONLY_NOTE not in html.unescape(page.text)
    plain = http.get("/device")
    assert 'href="/device/providers/github/start">Continue with GitHub' in plain.text


@pytest.mark.parametrize("password_login", [False])
def test_sign_in_view_without_password_login(http: httpx.Client) -> None:
    page = http.get("/device")
    assert page.status_code == 200
    assert "Continue with GitHub" in page.text
    assert 'action="/device/sign-in"' not in page.text
    assert 'type="password"' not in page.text
    assert PROVIDERS_ONLY_NOTE in html.unescape(page.text)
    register_refused = http.post(
        "/auth/register", json={"email": ADA, "password": PASSWORD, "name": "Ada"}
    )
    assert register_refused.status_code == 400  # FAILED_PRECONDITION PASSWORD_LOGIN_DISABLED
    # A post of the old form (a tab opened before the change) gets the refusal in plain words.
    refused = http.post(
        "/device/sign-in",
        data={"csrf_token": http.cookies["luman_device_csrf"], "email": ADA, "password": PASSWORD},
    )
    assert refused.status_code == 403
    assert alerts(refused.text, "error") == [PROVIDERS_ONLY]
    assert "Continue with GitHub" in refused.text
    assert "luman_device_session" not in refused.headers.get("set-cookie", "")


def test_start_sets_the_state_cookie_and_redirects_to_github(
    http: httpx.Client, github: GitHubFake
) -> None:
    response = _start(http, "BCDF-GHJK")
    location = urllib.parse.urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        github.url + "/login/oauth/authorize"
    )
    query = dict(urllib.parse.parse_qsl(location.query))
    assert query["client_id"] == github.client_id
    assert query["redirect_uri"] == github.callback_url
    assert query["code_challenge_method"] == "S256"
    state = _set_cookie(response, "luman_provider_state")
    assert state.startswith(f"luman_provider_state={query['state']};")
    for flag in ("; Path=/device/providers", "; HttpOnly", "; SameSite=Lax"):
        assert flag in state
    assert "Secure" not in state
    max_age = int(state.split("Max-Age=")[1].split(";")[0])
    assert 590 <= max_age <= 600  # PROVIDER_LOGIN_TTL
    code = _set_cookie(response, "luman_provider_code")
    assert code.startswith("luman_provider_code=BCDF-GHJK;")
    assert "; Path=/device/providers" in code
    assert response.headers["referrer-policy"] == "same-origin"  # GitHub gets no Referer
    # Behind TLS the cookies are Secure.
    tls = http.get(START, headers={"x-forwarded-proto": "https"})
    assert tls.status_code == 303
    assert "; Secure" in _set_cookie(tls, "luman_provider_state")


def test_sign_in_with_github_then_approve_the_device(
    http: httpx.Client, github: GitHubFake, auth: Stub
) -> None:
    device = start(auth)
    back = _sign_in_with_github(http, github, device.user_code)
    assert back.status_code == 303, back.text
    assert back.headers["location"] == f"/device?user_code={device.user_code.replace('-', '')}"
    session = _set_cookie(back, "luman_device_session")
    for flag in ("; Path=/device", "; HttpOnly", "; SameSite=Lax"):
        assert flag in session
    # The state is spent: its cookie goes.
    assert "Max-Age=0" in _set_cookie(back, "luman_provider_state")
    assert "Max-Age=0" in _set_cookie(back, "luman_provider_code")
    page = http.get(back.headers["location"])
    assert page.status_code == 200
    assert "Approve this device?" in page.text
    assert f"Signed in as <strong>{ADA}</strong>" in page.text
    decided = http.post(
        "/device/approve",
        data={"csrf_token": csrf_of(page.text), "user_code": device.user_code},
    )
    assert decided.status_code == 303
    assert poll(auth, device.device_code).user.email == ADA


def test_callback_in_another_browser_is_refused_without_spending_the_state(
    http: httpx.Client, github: GitHubFake, gateway: GatewayServer
) -> None:
    started = _start(http, "BCDF-GHJK")
    location = github.approve(started.headers["location"])
    parts = urllib.parse.urlsplit(location)
    with httpx.Client(base_url=http.base_url, trust_env=False) as other:
        # A browser that did not start this sign-in (login CSRF: someone else's code).
        refused = other.get(f"{parts.path}?{parts.query}")
        assert refused.status_code == 400
        assert _lead(refused) == NOT_THIS_BROWSER
        assert "luman_device_session" not in refused.headers.get("set-cookie", "")
        # A browser with a sign-in of its own pending: still not this one.
        other.cookies.set("luman_provider_state", "another-state", path="/device/providers")
        assert other.get(f"{parts.path}?{parts.query}").status_code == 400
    # The state was not spent: the browser that started the sign-in completes it.
    back = _back(http, location)
    assert back.status_code == 303, back.text
    assert back.headers["location"] == "/device?user_code=BCDFGHJK"


def test_replayed_callback_is_refused(http: httpx.Client, github: GitHubFake) -> None:
    started = _start(http)
    state = _set_cookie(started, "luman_provider_state").split(";")[0].split("=", 1)[1]
    location = github.approve(started.headers["location"])
    assert _back(http, location).status_code == 303
    # The same browser: its state cookie is gone.
    again = _back(http, location)
    assert again.status_code == 400
    assert _lead(again) == NOT_THIS_BROWSER
    assert _back_link(again) == "/device"
    # With the cookie put back, the server refuses the used state.
    http.cookies.set("luman_provider_state", state, path="/device/providers")
    replayed = _back(http, location)
    assert replayed.status_code == 400
    assert _lead(replayed).startswith("This sign-in link was already used")
    assert "luman_device_session" not in replayed.headers.get("set-cookie", "")


def test_cancel_at_github_is_a_page_saying_so(http: httpx.Client, github: GitHubFake) -> None:
    started = _start(http, "BCDF-GHJK")
    location = github.cancel(started.headers["location"])
    assert "error=access_denied" in location
    page = _back(http, location)
    assert page.status_code == 403
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == PAGE_CSP.decode()
    assert _lead(page) == "You cancelled the sign-in at GitHub. Nothing was changed."
    assert _back_link(page) == "/device?user_code=BCDF-GHJK"
    assert "Max-Age=0" in _set_cookie(page, "luman_provider_state")
    assert "luman_device_session" not in page.headers.get("set-cookie", "")


def test_github_down_is_a_503_page(http: httpx.Client, github: GitHubFake) -> None:
    started = _start(http)
    location = github.approve(started.headers["location"])
    github.down = True
    page = _back(http, location)
    assert page.status_code == 503
    assert _lead(page) == (
        "GitHub is not responding right now. Try again in a few minutes, or sign in another way."
    )
    assert int(page.headers["retry-after"]) > 0
    assert _back_link(page) == "/device"


def test_github_without_a_verified_email_is_a_page_saying_so(
    http: httpx.Client, github: GitHubFake
) -> None:
    github.add_user(
        GitHubUser(
            id=7, login="bob", emails=[GitHubEmail("bob@example.com", primary=True, verified=False)]
        )
    )
    github.signed_in = "bob"
    page = _sign_in_with_github(http, github)
    assert page.status_code == 403
    assert _lead(page).startswith("GitHub has no verified email address for your account")


def test_link_github_to_an_existing_account(http: httpx.Client, github: GitHubFake) -> None:
    register(http, ADA)
    page = _sign_in_with_github(http, github, "BCDF-GHJK")
    assert page.status_code == 200, page.text
    assert "<h1>Link your account</h1>" in page.text
    assert f"<strong>{ADA}</strong>" in page.text
    assert 'action="/device/providers/link"' in page.text
    link = _set_cookie(page, "luman_provider_link")
    for flag in ("; Path=/device/providers", "; HttpOnly", "; SameSite=Strict"):
        assert flag in link
    assert "luman_device_session" not in page.headers.get("set-cookie", "")
    form = {
        "csrf_token": csrf_of(page.text),
        "user_code": "BCDFGHJK",
        "provider": "github",
        "email": ADA,
    }
    wrong = http.post("/device/providers/link", data={**form, "password": "not the password"})
    assert wrong.status_code == 401
    assert alerts(wrong.text, "error") == [LINK_REFUSED]
    assert 'action="/device/providers/link"' in wrong.text
    linked = http.post("/device/providers/link", data={**form, "password": PASSWORD})
    assert linked.status_code == 303, linked.text
    assert linked.headers["location"] == "/device?user_code=BCDFGHJK"
    assert "Max-Age=0" in _set_cookie(linked, "luman_provider_link")
    assert "; SameSite=Lax" in _set_cookie(linked, "luman_device_session")
    me = http.get("/device")
    assert f"Signed in as <strong>{ADA}</strong>" in me.text
    # The link token worked once.
    http.cookies.set(
        "luman_provider_link", link.split(";")[0].split("=", 1)[1], path="/device/providers"
    )
    used = http.post("/device/providers/link", data={**form, "password": PASSWORD})
    assert used.status_code == 400
    assert _lead(used) == LINK_EXPIRED
    # From now on, GitHub signs in to the account directly.
    http.cookies.clear()
    again = _sign_in_with_github(http, github)
    assert again.status_code == 303, again.text
    assert again.headers["location"] == "/device"


def test_link_form_is_checked_for_csrf_and_its_cookie(
    http: httpx.Client, github: GitHubFake
) -> None:
    register(http, ADA)
    page = _sign_in_with_github(http, github)
    assert page.status_code == 200, page.text
    form = {"csrf_token": csrf_of(page.text), "provider": "github", "email": ADA}
    without = http.post("/device/providers/link", data={"password": PASSWORD})
    assert without.status_code == 403
    assert "could not be verified" in without.text
    forged = http.post(
        "/device/providers/link", data={**form, "csrf_token": "not-it", "password": PASSWORD}
    )
    assert forged.status_code == 403
    foreign = http.post(
        "/device/providers/link",
        data={**form, "password": PASSWORD},
        headers={"origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    cross_site = http.post(
        "/device/providers/link",
        data={**form, "password": PASSWORD},
        headers={"sec-fetch-site": "cross-site"},
    )
    assert cross_site.status_code == 403
    empty = http.post("/device/providers/link", data={**form, "password": ""})
    assert empty.status_code == 400
    assert 'action="/device/providers/link"' in empty.text
    # None of those linked anything or used the token: the real form still works.
    assert (
        http.post("/device/providers/link", data={**form, "password": PASSWORD}).status_code == 303
    )
    # Without the link cookie (expired, another browser): a page saying so.
    http.cookies.delete("luman_provider_link", path="/device/providers")
    gone = http.post("/device/providers/link", data={**form, "password": PASSWORD})
    assert gone.status_code == 400
    assert _lead(gone) == LINK_EXPIRED


@pytest.mark.parametrize("provider_login_limit", [1])
def test_too_many_sign_ins_is_a_429_page(http: httpx.Client) -> None:
    assert _start(http, "BCDF-GHJK").status_code == 303
    page = http.get(START, params={"user_code": "BCDF-GHJK"})
    assert page.status_code == 429
    assert _lead(page).startswith("Too many attempts, try again in ")
    assert int(page.headers["retry-after"]) > 0
    assert _back_link(page) == "/device?user_code=BCDF-GHJK"
    assert "luman_provider_state" not in page.headers.get("set-cookie", "")


def test_provider_pages_unknown_provider_path_and_method(http: httpx.Client) -> None:
    unknown = http.get("/device/providers/gitlab/start?user_code=BCDF-GHJK")
    assert unknown.status_code == 404
    assert "offers no sign-in with gitlab" in _lead(unknown)
    assert _back_link(unknown) == "/device?user_code=BCDF-GHJK"
    malformed = http.get("/device/providers/Not_An_Id/start")
    assert malformed.status_code == 404
    assert http.get("/device/providers/github/nope").status_code == 404
    assert http.get("/device/providers").status_code == 404
    posted = http.post(START)
    assert posted.status_code == 405
    assert posted.headers["allow"] == "GET"
    assert http.get("/device/providers/link").headers["allow"] == "POST"
