"""A loopback fake of the GitHub endpoints that sign-in with GitHub uses, as GitHub documents
them:

- the web application flow of an OAuth app, with PKCE:
  https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
  and its errors:
  https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-authorization-request-errors
  https://docs.github.com/en/apps/oauth-apps/maintaining-oauth-apps/troubleshooting-oauth-app-access-token-request-errors
- GET /user: https://docs.github.com/en/rest/users/users#get-the-authenticated-user
- GET /user/emails:
  https://docs.github.com/en/rest/users/emails#list-email-addresses-for-the-authenticated-user

The web pages are served at the root (github_url = fake.url) and the REST API under /api/v3,
where GitHub Enterprise Server serves it (github_api_url = fake.api_url).

    with GitHubFake(callback_url="http://127.0.0.1:8080/callback") as fake:
        fake.add_user(GitHubUser(id=1, login="ada", name="Ada", emails=[...]))
        location = fake.approve(authorization_url)   # what a browser clicking "Authorize" gets
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import http.server
import json
import secrets
import threading
import urllib.parse
from typing import Any

import httpx

ERROR_URI_BASE = "https://docs.github.com/apps/managing-oauth-apps/"


@dataclasses.dataclass
class GitHubEmail:
    """One entry of GET /user/emails."""

    email: str
    primary: bool = False
    verified: bool = True
    visibility: str | None = None  # "public", "private" or null


@dataclasses.dataclass
class GitHubUser:
    id: int
    login: str
    name: str | None = None
    emails: list[GitHubEmail] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Grant:
    """An authorization the user approved: what the access_token endpoint checks the code
    against."""

    login: str
    redirect_uri: str
    scope: str
    code_challenge: str
    code_challenge_method: str


class GitHubFake:
    """GitHub for one OAuth app (client_id, client_secret, callback_url) on 127.0.0.1:<port>.

    Attributes the test sets: `signed_in` (the login that approves in the browser; default the
    first user added), `down` (every endpoint answers 503).
    Attributes the test reads: `last_authorize_query` (the last GET /login/oauth/authorize
    query, one value per name), `token_requests` (forms POSTed to the access_token endpoint).
    """

    def __init__(
        self,
        *,
        callback_url: str,
        client_id: str = "gh-client-id",
        client_secret: str = "gh-client-secret",
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.callback_url = callback_url
        self.users: dict[str, GitHubUser] = {}
        self.signed_in = ""
        self.down = False
        self.last_authorize_query: dict[str, str] = {}
        self.token_requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, str]] = {}  # authorize page id -> its query
        self._codes: dict[str, _Grant] = {}
        self._tokens: dict[str, tuple[str, str]] = {}  # access token -> (login, scope)
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        return self.url + "/api/v3"

    def add_user(self, user: GitHubUser) -> GitHubUser:
        with self._lock:
            self.users[user.login] = user
            self.signed_in = self.signed_in or user.login
        return user

    def __enter__(self) -> GitHubFake:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- what a browser does ---------------------------------------------------------------

    def approve(self, authorization_url: str) -> str:
        """Opens `authorization_url` and clicks "Authorize", as a browser would: returns the
        Location GitHub redirects to (the callback with ?code=…&state=…, or with ?error=…)."""
        with httpx.Client(follow_redirects=False) as browser:
            page = browser.get(authorization_url)
            if page.status_code == 302:
                return page.headers["location"]
            assert page.status_code == 200, page.text
            form_id = page.text.split('name="authorization" value="', 1)[1].split('"', 1)[0]
            answer = browser.post(
                self.url + "/login/oauth/authorize", data={"authorization": form_id}
            )
            assert answer.status_code == 302, answer.text
            return answer.headers["location"]

    def cancel(self, authorization_url: str) -> str:
        """Opens `authorization_url` and follows "Cancel": returns where it leads."""
        with httpx.Client(follow_redirects=False) as browser:
            page = browser.get(authorization_url)
            assert page.status_code == 200, page.text
            href = page.text.split('id="cancel" href="', 1)[1].split('"', 1)[0]
            return html.unescape(href)

    # -- the endpoints ---------------------------------------------------------------------

    def authorize_page(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """GET /login/oauth/authorize (authorizing-oauth-apps, "1. Request a user's GitHub
        identity")."""
        self.last_authorize_query = dict(query)
        if query.get("client_id") != self.client_id:
            return 404, {"Content-Type": "text/html"}, b"<h1>404 Not Found</h1>"
        state = query.get("state", "")
        redirect_uri = query.get("redirect_uri") or self.callback_url
        if redirect_uri != self.callback_url:
            # troubleshooting-authorization-request-errors, "Redirect URI mismatch": to the
            # registered callback URL.
            return _redirect(
                self.callback_url,
                error="redirect_uri_mismatch",
                error_description="The redirect_uri MUST match the registered callback URL "
                "for this application.",
                error_uri=ERROR_URI_BASE
                + "troubleshooting-authorization-request-errors/#redirect-uri-mismatch",
                state=state,
            )
        form_id = secrets.token_urlsafe(16)
        with self._lock:
            self._pending[form_id] = {**query, "redirect_uri": redirect_uri}
        cancel = _with_query(
            redirect_uri,
            error="access_denied",
            error_description="The user has denied your application access.",
            error_uri=ERROR_URI_BASE
            + "troubleshooting-authorization-request-errors/#access-denied",
            state=state,
        )
        page = (
            "<!doctype html><html><head><title>Authorize application</title></head><body>"
            f"<h1>Authorize {html.escape(self.client_id)}</h1>"
            f"<p>Signed in as {html.escape(self.signed_in)}; scopes "
            f"{html.escape(query.get('scope', ''))}</p>"
            '<form method="post" action="/login/oauth/authorize">'
            f'<input type="hidden" name="authorization" value="{form_id}">'
            '<button type="submit" id="authorize">Authorize</button></form>'
            f'<a id="cancel" href="{html.escape(cancel)}">Cancel</a>'
            "</body></html>"
        )
        return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()

    def authorize_submit(self, form: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """The "Authorize" button: "2. Users are redirected back to your site by GitHub"."""
        with self._lock:
            query = self._pending.pop(form.get("authorization", ""), None)
            if query is None or self.signed_in not in self.users:
                return 400, {"Content-Type": "text/plain"}, b"unknown authorization"
            code = secrets.token_hex(10)  # GitHub's codes are 20 hex characters
            self._codes[code] = _Grant(
                login=self.signed_in,
                redirect_uri=query["redirect_uri"],
                scope=query.get("scope", ""),
                code_challenge=query.get("code_challenge", ""),
                code_challenge_method=query.get("code_challenge_method", ""),
            )
        return _redirect(query["redirect_uri"], code=code, state=query.get("state", ""))

    def access_token(self, form: dict[str, str], accept: str) -> tuple[int, dict[str, str], bytes]:
        """POST /login/oauth/access_token: HTTP 200 either way, an error as a JSON object
        (troubleshooting-oauth-app-access-token-request-errors)."""
        self.token_requests.append(dict(form))

        def error(name: str, description: str) -> tuple[int, dict[str, str], bytes]:
            return _token_answer(
                accept,
                {
                    "error": name,
                    "error_description": description,
                    "error_uri": ERROR_URI_BASE
                    + "troubleshooting-oauth-app-access-token-request-errors/#"
                    + name.replace("_", "-"),
                },
            )

        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return error(
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
            )
        with self._lock:
            # A code works once (authorizing-oauth-apps: "codes ... can only be exchanged once").
            grant = self._codes.pop(form.get("code", ""), None)
        if grant is None:
            return error("bad_verification_code", "The code passed is incorrect or expired.")
        if form.get("redirect_uri", grant.redirect_uri) != grant.redirect_uri:
            return error(
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
            )
        if grant.code_challenge and (
            grant.code_challenge_method != "S256"
            or _s256(form.get("code_verifier", "")) != grant.code_challenge
        ):
            # GitHub documents PKCE's parameters but not this error's name; a code that does
            # not match its request is bad_verification_code.
            return error("bad_verification_code", "The code passed is incorrect or expired.")
        token = "gho_" + secrets.token_urlsafe(27)
        with self._lock:
            self._tokens[token] = (grant.login, grant.scope)
        return _token_answer(
            accept,
            {"access_token": token, "scope": grant.scope.replace(" ", ","), "token_type": "bearer"},
        )

    def api(self, path: str, authorization: str) -> tuple[int, dict[str, str], bytes]:
        """GET /api/v3/user and /api/v3/user/emails with `Authorization: Bearer <token>`."""
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            found = self._tokens.get(token) if scheme.lower() in ("bearer", "token") else None
            user = self.users.get(found[0]) if found else None
        if found is None or user is None:
            return _json(
                401,
                {
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                },
            )
        scopes = set(found[1].replace(",", " ").split())
        if path == "/user":
            return _json(200, _user_json(user))
        if path == "/user/emails":
            # OAuth app tokens need the user:email (or user) scope for this endpoint.
            if not scopes & {"user", "user:email"}:
                return _json(
                    404,
                    {
                        "message": "Not Found",
                        "documentation_url": "https://docs.github.com/rest/users/emails"
                        "#list-email-addresses-for-the-authenticated-user",
                        "status": "404",
                    },
                )
            return _json(200, [dataclasses.asdict(email) for email in user.emails])
        return _json(404, {"message": "Not Found", "status": "404"})


def _user_json(user: GitHubUser) -> dict[str, Any]:
    """The documented shape of the authenticated user (a "private user"), trimmed."""
    public = next((e.email for e in user.emails if e.visibility == "public"), None)
    return {
        "login": user.login,
        "id": user.id,
        "node_id": f"MDQ6VXNlcj{user.id}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user.id}?v=4",
        "html_url": f"https://github.com/{user.login}",
        "type": "User",
        "site_admin": False,
        "name": user.name,
        "company": None,
        "blog": "",
        "location": None,
        "email": public,
        "bio": None,
        "public_repos": 0,
        "followers": 0,
        "following": 0,
        "created_at": "2020-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "two_factor_authentication": True,
    }


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)


def _redirect(url: str, **params: str) -> tuple[int, dict[str, str], bytes]:
    return 302, {"Location": _with_query(url, **params)}, b""


def _json(status: int, body: object) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(body).encode()


def _token_answer(accept: str, body: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    # "By default, the response takes the following form" (form-encoded); JSON with
    # Accept: application/json.
    if "application/json" in accept:
        return _json(200, body)
    encoded = urllib.parse.urlencode(body).encode()
    return 200, {"Content-Type": "application/x-www-form-urlencoded"}, encoded


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: GitHubFake) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        fake = self.server.fake
        if fake.down:
            self._answer(503, {"Content-Type": "text/plain"}, b"Service Unavailable")
        elif parts.path == "/login/oauth/authorize":
            self._answer(*fake.authorize_page(query))
        elif parts.path.startswith("/api/v3/"):
            path = parts.path.removeprefix("/api/v3")
            self._answer(*fake.api(path, self.headers.get("Authorization", "")))
        else:
            self._answer(404, {"Content-Type": "text/plain"}, b"Not Found")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        fake = self.server.fake
        path = urllib.parse.urlsplit(self.path).path
        if fake.down:
            self._answer(503, {"Content-Type": "text/plain"}, b"Service Unavailable")
        elif path == "/login/oauth/authorize":
            self._answer(*fake.authorize_submit(form))
        elif path == "/login/oauth/access_token":
            self._answer(*fake.access_token(form, self.headers.get("Accept", "")))
        else:
            self._answer(404, {"Content-Type": "text/plain"}, b"Not Found")

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass
