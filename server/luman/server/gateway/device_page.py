"""The device login's approval page, /device: sign in, enter or confirm the code, see who is
asking, approve or deny (README "The approval page").

The page is a client of the API like any other: every action is an RPC run in process through
the server's interceptor chain (InProcessCalls, as the JSON routes are), so request logging,
rate limits, token authentication and error mapping all apply. It reads no database itself.

    GET  /device[?user_code=…]   sign-in view (a "Continue with …" link per identity provider,
                                 and the email/password form unless PASSWORD_LOGIN=false),
                                 code form, or the confirmation of that code
    POST /device/sign-in         Login -> session cookie -> 303 back to the code
    GET  /device/providers/<id>/start[?user_code=…]
                                 StartProviderLogin -> state cookie -> 303 to the provider
    GET  /device/providers/<id>/callback?state=…&code=… (or &error=…)
                                 CompleteProviderLogin -> session cookie -> 303 back to the
                                 code, or the "Link your account" password form
    POST /device/providers/link  LinkProviderIdentity -> session cookie -> 303 back to the code
    POST /device/code            303 to /device?user_code=…
    POST /device/approve|deny    ApproveDeviceLogin / DenyDeviceLogin -> 303 to the outcome
    GET  /device/done?outcome=…  approved or denied (a GET, so a reload posts nothing again)
    POST /device/sign-out        clears the cookie (the sign-in stays valid: an approval made
                                 with it holds only while it does)
    GET  /device/style.css       the stylesheet (the CSP allows no inline style or script)

Cookies, both Path=/device, HttpOnly, Secure behind TLS (and whenever PUBLIC_URL is https):
the session (the access token from Login, SameSite=Lax, Max-Age its remaining life) and a
per-browser CSRF token (SameSite=Strict) that every form echoes in a hidden field; a POST
without the matching token, or with another Origin, gets a 403 page. The sign-in through an
identity provider adds its own, under Path=/device/providers (provider_pages.py).
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
import math
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2

from luman.auth.v1 import auth_pb2, auth_service_pb2
from luman.interceptors import metadata_keys
from luman.interceptors.client_address import parse_address
from luman.server.clock import Clock
from luman.server.gateway import bodies, caching
from luman.server.gateway import device_templates as templates
from luman.server.gateway import status as statuses
from luman.server.gateway.in_process import CallResult, InProcessCalls, grpc_peer
from luman.server.gateway.policy import HSTS, PAGE_SECURITY_HEADERS, ClientAddress, Header
from luman.server.gateway.routes import Route, RouteTable

logger = logging.getLogger(__name__)

Message_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message_]]
Send = Callable[[Message_], Awaitable[None]]

PAGE_PATH = "/device"
DONE_PATH = "/device/done"
SESSION_COOKIE = "luman_device_session"
CSRF_COOKIE = "luman_device_csrf"
CSRF_FIELD = "csrf_token"
# Anti-phishing: a code older than this is flagged on the page.
OLD_CODE_SECONDS = 180
MAX_FORM_BYTES = 8192
MAX_USER_AGENT = 512
STYLESHEET = (Path(__file__).parent / "static" / "device.css").read_bytes()
_CSS_CACHE: Header = (b"cache-control", b"public, max-age=3600")
Answer = tuple[int, str | bytes, list[Header]]

_SERVICE = "/" + auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name + "/"
WRONG_CODE = (
    "That code is not valid: it may be mistyped, expired or already used. "
    "Check the code in your terminal, or run luman login again."
)
BAD_CREDENTIALS = "That email and password do not match an account."
SESSION_EXPIRED = "Your session has expired. Sign in again."
UNAVAILABLE = "The service is unavailable right now. Try again in a moment."
FAILED = "Something went wrong. Try again."
PROVIDERS_ONLY = (
    "This server does not accept passwords. Sign in with one of the accounts offered instead."
)


def is_page_path(path: str) -> bool:
    return path == PAGE_PATH or path.startswith(PAGE_PATH + "/")


class PageRequest(Protocol):
    """What the page needs from the gateway's decoded request (app._Request)."""

    method: str
    query: bytes
    scheme: str
    peer: str
    headers: dict[str, list[str]]

    def header(self, name: str) -> str | None: ...


class RefusedError(Exception):
    """A request answered with a message page (403 CSRF, 415, 413)."""

    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(text)
        self.status, self.title, self.text = status, title, text


class Visit:
    """One request: its cookies, client address, and the response cookies it sets."""

    def __init__(
        self,
        request: PageRequest,
        addresses: ClientAddress,
        public_https: bool,
        *,
        path: str = PAGE_PATH,
        csrf_cookie: str = CSRF_COOKIE,
    ) -> None:
        """`path` scopes the cookies it sets; `csrf_cookie` names the CSRF cookie (each page
        has its own, so that one page's token never stands for another's)."""
        self.request = request
        self._path = path
        self.csrf_cookie = csrf_cookie
        # A PUBLIC_URL on https means people reach the page over TLS, even if the proxy in
        # front is not in TRUSTED_PROXIES (so its X-Forwarded-Proto is not believed): the
        # cookie that carries an access token must never travel in clear.
        self.https = public_https or addresses.is_https(
            request.scheme, request.peer, request.header("x-forwarded-proto")
        )
        forwarded = ", ".join(request.headers.get("x-forwarded-for", ())) or None
        self.client_ip = addresses.client_ip(request.peer, forwarded)
        self.cookies = parse_cookies(request.headers.get("cookie", []))
        self.set_cookies: list[str] = []
        csrf = self.cookies.get(csrf_cookie, "")
        if not is_token(csrf):
            csrf = secrets.token_urlsafe(32)
            self.set_cookies.append(self._cookie(csrf_cookie, csrf, "Strict", None))
        self.csrf = csrf
        token = self.cookies.get(SESSION_COOKIE, "")
        self.session = token if is_token(token) else ""

    def _cookie(
        self, name: str, value: str, same_site: str, max_age: int | None, path: str = ""
    ) -> str:
        parts = [
            f"{name}={value}",
            f"Path={path or self._path}",
            "HttpOnly",
            f"SameSite={same_site}",
        ]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if self.https:
            parts.append("Secure")
        return "; ".join(parts)

    def set_cookie(
        self, name: str, value: str, *, same_site: str, max_age: int, path: str = ""
    ) -> None:
        """Sets an HttpOnly cookie (Secure over https) on `path`, by default the page's."""
        self.set_cookies.append(self._cookie(name, value, same_site, max_age, path))

    def start_session(self, token: str, max_age: int) -> None:
        self.session = token
        self.set_cookies.append(self._cookie(SESSION_COOKIE, token, "Lax", max_age))

    def end_session(self) -> None:
        self.session = ""
        self.set_cookies.append(self._cookie(SESSION_COOKIE, "", "Lax", 0))


class DevicePage:
    """Serves /device. Args: `calls` and `routes` as the JSON gateway has them; `clock` the
    server's (how old a code is, how long the session cookie lives)."""

    def __init__(
        self,
        calls: InProcessCalls,
        routes: RouteTable,
        addresses: ClientAddress,
        clock: Clock,
        *,
        public_origin: str = "",
    ) -> None:
        self._calls = calls
        self._routes = {route.grpc_path: route for route in routes.routes}
        self._addresses = addresses
        self._clock = clock
        self._public_origin = public_origin.rstrip("/").lower()
        self._public_https = self._public_origin.startswith("https://")
        # Imported here: provider_pages builds on this module's Visit and helpers.
        from luman.server.gateway.provider_pages import ProviderPages

        # ListIdentityProviders' first answer: the providers are read from the environment at
        # start and never change while the server runs, so asking once spares every later
        # sign-in view an RPC, a rate-limit hit and a request-log row.
        self._sign_in_options: auth_service_pb2.ListIdentityProvidersResponse | None = None
        self._provider_pages = ProviderPages(self._rpc, self._form, clock, self.sign_in_options)

    async def handle(self, request: PageRequest, receive: Receive, send: Send, path: str) -> None:
        visit = Visit(request, self._addresses, self._public_https)
        try:
            status, body, headers = await self._dispatch(visit, path, receive)
        except bodies.ClientGoneError:
            return
        except RefusedError as exc:
            status, body, headers = (
                exc.status,
                templates.message(exc.title, exc.text, csrf=visit.csrf),
                [],
            )
        except Exception:
            logger.exception("device page error on %s %s", request.method, path[:200])
            status, body, headers = 500, templates.message("Something went wrong", FAILED), []
        await self._send(
            visit, send, status, body.encode() if isinstance(body, str) else body, headers
        )

    async def _dispatch(self, visit: Visit, path: str, receive: Receive) -> Answer:
        method = visit.request.method
        if path == templates.STYLESHEET_PATH:
            if method not in ("GET", "HEAD"):
                return not_allowed("GET")
            css = [(b"content-type", b"text/css; charset=utf-8"), _CSS_CACHE]
            return 200, STYLESHEET, css
        if path.startswith(templates.PROVIDERS_PATH + "/"):
            return await self._provider_pages.dispatch(visit, path, receive)
        posts = {
            "/device/sign-in": self._sign_in,
            "/device/code": self._code,
            "/device/approve": self._approve,
            "/device/deny": self._deny,
            "/device/sign-out": self._sign_out,
        }
        if path in (PAGE_PATH, DONE_PATH):
            if method not in ("GET", "HEAD"):
                return not_allowed("GET")
            query = first_values(visit.request.query.decode("latin-1"))
            if path == DONE_PATH:
                return await self._done(visit, query.get("outcome", ""))
            return await self._show(visit, query.get("user_code", ""))
        handler = posts.get(path)
        if handler is None:
            return 404, templates.message("Page not found", "There is no such page."), []
        if method != "POST":
            return not_allowed("POST")
        form = await self._form(visit, receive)
        return await handler(visit, form)

    # Views.

    async def _show(self, visit: Visit, user_code: str, *, error: str = "") -> Answer:
        user_code = clean_code(user_code)
        if not visit.session:
            return 200, await self._sign_in_view(visit, user_code), []
        me = await self._rpc(visit, "GetMe", auth_service_pb2.GetMeRequest())
        if me.code == grpc.StatusCode.UNAUTHENTICATED:
            visit.end_session()
            page = await self._sign_in_view(visit, user_code, notice=SESSION_EXPIRED)
            return 200, page, []
        if me.response is None:
            return await self._failure(visit, me, "")
        assert isinstance(me.response, auth_service_pb2.GetMeResponse)
        email = me.response.user.email
        if not user_code:
            return 200, templates.enter_code(csrf=visit.csrf, email=email, error=error), []
        got = await self._rpc(
            visit, "GetDeviceLogin", auth_service_pb2.GetDeviceLoginRequest(user_code=user_code)
        )
        if got.response is None:
            return await self._failure(visit, got, email, user_code=user_code)
        assert isinstance(got.response, auth_service_pb2.GetDeviceLoginResponse)
        requester = self._requester(visit, got.response)
        return 200, templates.confirm(csrf=visit.csrf, email=email, requester=requester), []

    def _requester(
        self, visit: Visit, response: auth_service_pb2.GetDeviceLoginResponse
    ) -> templates.Requester:
        login = response.device_login
        age_seconds = max(
            0.0, (self._clock() - login.create_time.ToDatetime(tzinfo=dt.UTC)).total_seconds()
        )
        warnings = []
        if age_seconds > OLD_CODE_SECONDS:
            warnings.append(
                f"This code was requested {_ago(age_seconds)}. Codes are normally used within a "
                "minute or two: if you did not just start this login, deny it."
            )
        if not same_network(login.client_ip, visit.client_ip):
            where = login.client_ip or "an unknown address"
            warnings.append(
                f"This login was requested from a different network ({where}) than the one "
                f"you are on ({visit.client_ip}). If the terminal is not yours, deny it."
            )
        client = " ".join(p for p in (login.client_id, login.client_version) if p)
        return templates.Requester(
            user_code=login.user_code,
            client=client,
            host_name=login.host_name,
            os=login.os,
            client_ip=login.client_ip,
            age=_ago(age_seconds),
            scopes=tuple(login.scopes),
            warnings=tuple(warnings),
        )

    # Form posts.

    async def _sign_in(self, visit: Visit, form: dict[str, str]) -> Answer:
        email, password = form.get("email", "").strip(), form.get("password", "")
        user_code = clean_code(form.get("user_code", ""))
        if not email or not password:
            page = await self._sign_in_view(
                visit, user_code, email=email, error="Enter your email and password."
            )
            return 400, page, []
        result = await self._rpc(
            visit, "Login", auth_service_pb2.LoginRequest(email=email, password=password)
        )
        if result.response is None:
            status, text = self._error_text(result)
            if result.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT):
                status, text = 401, BAD_CREDENTIALS
            page = await self._sign_in_view(visit, user_code, email=email, error=text)
            return status, page, []
        assert isinstance(result.response, auth_service_pb2.LoginResponse)
        visit.start_session(
            result.response.tokens.access_token,
            session_max_age(result.response.tokens, self._clock),
        )
        return see_other(page_url(user_code))

    async def _code(self, visit: Visit, form: dict[str, str]) -> Answer:
        return see_other(page_url(clean_code(form.get("user_code", ""))))

    async def _approve(self, visit: Visit, form: dict[str, str]) -> Answer:
        return await self._decide(visit, form, approve=True)

    async def _deny(self, visit: Visit, form: dict[str, str]) -> Answer:
        return await self._decide(visit, form, approve=False)

    async def _decide(self, visit: Visit, form: dict[str, str], *, approve: bool) -> Answer:
        user_code = clean_code(form.get("user_code", ""))
        if not visit.session:
            page = await self._sign_in_view(visit, user_code, notice=SESSION_EXPIRED)
            return 401, page, []
        # What the page showed, read again for the outcome page (and the session's email).
        me = await self._rpc(visit, "GetMe", auth_service_pb2.GetMeRequest())
        if me.response is None:
            return await self._failure(visit, me, "", user_code=user_code)
        assert isinstance(me.response, auth_service_pb2.GetMeResponse)
        email = me.response.user.email
        got = await self._rpc(
            visit, "GetDeviceLogin", auth_service_pb2.GetDeviceLoginRequest(user_code=user_code)
        )
        if got.response is None:
            return await self._failure(visit, got, email, user_code=user_code)
        assert isinstance(got.response, auth_service_pb2.GetDeviceLoginResponse)
        if approve:
            result = await self._rpc(
                visit,
                "ApproveDeviceLogin",
                auth_service_pb2.ApproveDeviceLoginRequest(user_code=user_code),
            )
        else:
            result = await self._rpc(
                visit,
                "DenyDeviceLogin",
                auth_service_pb2.DenyDeviceLoginRequest(user_code=user_code),
            )
        if result.response is None:
            return await self._failure(visit, result, email, user_code=user_code)
        # Post/redirect/get: reloading the outcome repeats no decision (which would find the
        # code used and count a wrong attempt).
        return see_other(f"{DONE_PATH}?outcome={'approved' if approve else 'denied'}")

    async def _done(self, visit: Visit, outcome: str) -> Answer:
        if outcome not in ("approved", "denied") or not visit.session:
            return see_other(PAGE_PATH)
        me = await self._rpc(visit, "GetMe", auth_service_pb2.GetMeRequest())
        if me.response is None:
            return await self._failure(visit, me, "")
        assert isinstance(me.response, auth_service_pb2.GetMeResponse)
        email = me.response.user.email
        if outcome == "approved":
            return 200, templates.approved(csrf=visit.csrf, email=email), []
        return 200, templates.denied(csrf=visit.csrf, email=email), []

    async def _sign_out(self, visit: Visit, form: dict[str, str]) -> Answer:
        visit.end_session()
        return see_other(PAGE_PATH)

    # Plumbing.

    async def sign_in_options(
        self, visit: Visit
    ) -> auth_service_pb2.ListIdentityProvidersResponse | None:
        """The server's identity providers and password setting (ListIdentityProviders, asked
        once); None while that call fails."""
        if self._sign_in_options is None:
            listed = await self._rpc(
                visit, "ListIdentityProviders", auth_service_pb2.ListIdentityProvidersRequest()
            )
            if not isinstance(listed.response, auth_service_pb2.ListIdentityProvidersResponse):
                logger.warning(
                    "device page: ListIdentityProviders answered %s %s",
                    listed.code.name,
                    reason_of(listed) or "no reason",
                )
                return None
            self._sign_in_options = listed.response
        return self._sign_in_options

    async def _sign_in_view(
        self, visit: Visit, user_code: str, *, email: str = "", error: str = "", notice: str = ""
    ) -> str:
        """The sign-in view, with the server's identity providers. Should they be unknown
        (ListIdentityProviders failing), the view offers the password form alone: Login then
        says whether the server takes passwords."""
        options = await self.sign_in_options(visit)
        providers: tuple[templates.ProviderButton, ...] = ()
        password_login = True
        if options is not None:
            providers = tuple(
                templates.ProviderButton(p.id, p.display_name or p.id) for p in options.providers
            )
            password_login = options.password_login
        return templates.sign_in(
            csrf=visit.csrf,
            user_code=user_code,
            email=email,
            error=error,
            notice=notice,
            providers=providers,
            password_login=password_login,
        )

    async def _failure(
        self, visit: Visit, result: CallResult, email: str, *, user_code: str = ""
    ) -> Answer:
        """A failed call as a page: an expired session goes back to sign-in, a wrong code to
        the code form, anything else to a message."""
        if result.code == grpc.StatusCode.UNAUTHENTICATED:
            visit.end_session()
            page = await self._sign_in_view(visit, user_code, notice=SESSION_EXPIRED)
            return 401, page, []
        status, text = self._error_text(result)
        if email:
            page = templates.enter_code(csrf=visit.csrf, email=email, error=text)
            return status, page, []
        return status, templates.message("Something went wrong", text, csrf=visit.csrf), []

    def _error_text(self, result: CallResult) -> tuple[int, str]:
        code = result.code
        if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            return 400 if code == grpc.StatusCode.INVALID_ARGUMENT else 404, WRONG_CODE
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return 429, too_many_attempts(result)
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return 403, "Your sign-in cannot approve device logins. Sign out and sign in again."
        if code == grpc.StatusCode.UNAVAILABLE:
            return 503, UNAVAILABLE
        if reason_of(result) == "PASSWORD_LOGIN_DISABLED":
            return 403, PROVIDERS_ONLY
        logger.warning("device page: %s answered %s", code.name, reason_of(result) or "no reason")
        return 500, FAILED

    async def _rpc(self, visit: Visit, name: str, message: Message) -> CallResult:
        route: Route = self._routes[_SERVICE + name]
        metadata: list[tuple[str, str | bytes]] = []
        if visit.session:
            metadata.append((metadata_keys.AUTHORIZATION, f"Bearer {visit.session}"))
        user_agent = visit.request.header("user-agent")
        if user_agent:
            cleaned = "".join(c for c in user_agent if c.isascii() and c.isprintable())
            metadata.append((metadata_keys.USER_AGENT, cleaned[:MAX_USER_AGENT]))
        return await self._calls.call(route, message, tuple(metadata), grpc_peer(visit.client_ip))

    async def _form(self, visit: Visit, receive: Receive) -> dict[str, str]:
        """The POSTed form, once its origin and CSRF token are checked."""
        # The page sends Referrer-Policy: same-origin, so browsers post its forms with its own
        # Origin; `null` (a sandboxed frame, a data: URL, a redirect across origins) is
        # refused like any foreign origin.
        return await read_form(
            visit.request,
            receive,
            expected_csrf=visit.cookies.get(CSRF_COOKIE, ""),
            own_origin=own_origins(visit.request, visit.https, self._public_origin),
        )

    async def _send(
        self, visit: Visit, send: Send, status: int, body: bytes, headers: list[Header]
    ) -> None:
        if not headers or headers[0][0] != b"content-type":
            headers = [(b"content-type", b"text/html; charset=utf-8"), *headers]
        headers += caching.security_headers(PAGE_SECURITY_HEADERS, headers)
        headers += [(b"set-cookie", cookie.encode()) for cookie in visit.set_cookies]
        if visit.https:
            headers.append(HSTS)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if visit.request.method == "HEAD" else body}
        )


def own_origins(request: PageRequest, https: bool, public_origin: str) -> frozenset[str]:
    """The origins a page's own form posts come from: PUBLIC_URL's, and the Host it was
    reached at."""
    origins = {public_origin} if public_origin else set()
    host = (request.header("host") or "").strip().lower()
    if host:
        origins.add(f"{'https' if https else 'http'}://{host}")
    return frozenset(origins)


async def read_form(
    request: PageRequest,
    receive: Receive,
    *,
    expected_csrf: str,
    own_origin: frozenset[str],
    allow_null_origin: bool = False,
) -> dict[str, str]:
    """A page's POSTed form, once its origin and CSRF token are checked: an Origin, when sent,
    must be one of `own_origin` (or `null`, with `allow_null_origin`); Fetch Metadata, where
    sent, must say same-origin; the form's csrf_token must match `expected_csrf` (its cookie).

    Raises:
        RefusedError: 403, 413, 415 or 400, as a message page.
    """
    origin = request.header("origin")
    if origin is not None:
        origin = origin.strip().rstrip("/").lower()
        if origin not in own_origin and not (allow_null_origin and origin == "null"):
            raise _forbidden()
    fetch_site = request.header("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise _forbidden()
    media_type = (request.header("content-type") or "").partition(";")[0].strip().lower()
    body = await _read_body(request, receive)
    if media_type != "application/x-www-form-urlencoded":
        raise RefusedError(415, "Unsupported form", "This page only accepts its own forms.")
    try:
        form = first_values(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise RefusedError(400, "Bad form", "The form could not be read.") from None
    sent = form.get(CSRF_FIELD, "")
    if (
        not sent
        or not expected_csrf
        or not hmac.compare_digest(sent.encode(), expected_csrf.encode())
    ):
        raise _forbidden()
    return form


def same_network(a: str, b: str) -> bool:
    """Whether two client addresses are on one network: the same IPv4 /24 or IPv6 /64."""
    first, second = parse_address(a), parse_address(b)
    if first is None or second is None:
        return first is None and second is None and a == b
    if first.version != second.version:
        return False
    prefix = 24 if first.version == 4 else 64
    return ipaddress.ip_network(f"{first}/{prefix}", strict=False) == ipaddress.ip_network(
        f"{second}/{prefix}", strict=False
    )


def session_max_age(tokens: auth_pb2.TokenPair, clock: Clock) -> int:
    """The session cookie's Max-Age: the access token's remaining life, at least 1 s."""
    expires = tokens.access_token_expire_time.ToDatetime(tzinfo=dt.UTC)
    return max(1, int((expires - clock()).total_seconds()))


def _ago(seconds: float) -> str:
    if seconds < 60:
        return "less than a minute ago"
    minutes = int(seconds // 60)
    if minutes < 60:
        return "1 minute ago" if minutes == 1 else f"{minutes} minutes ago"
    hours = minutes // 60
    return "1 hour ago" if hours == 1 else f"{hours} hours ago"


def clean_code(value: str) -> str:
    """A user code as typed, for the URL and the forms: letters and dashes, 20 at most. The
    server judges it (GetDeviceLogin); this only keeps junk out of the page."""
    return "".join(c for c in value.strip().upper() if c.isascii() and (c.isalpha() or c == "-"))[
        :20
    ]


# The page's own address, with the code filled in (device_templates.py links to it too).
page_url = templates.page_url


def see_other(location: str) -> Answer:
    return 303, "", [(b"location", location.encode())]


def too_many_attempts(result: CallResult) -> str:
    """A rate-limited call's sentence, with its RetryInfo rounded up to minutes."""
    seconds = retry_seconds(result) or 60
    minutes = max(1, math.ceil(seconds / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many attempts, try again in {minutes} {unit}."


def not_allowed(allowed: str) -> Answer:
    page = templates.message("Method not allowed", "This page does not accept that request.")
    return 405, page, [(b"content-type", b"text/html; charset=utf-8"), (b"allow", allowed.encode())]


def _forbidden() -> RefusedError:
    return RefusedError(
        403,
        "Request refused",
        "This form could not be verified. Go back to the start, reload the page and try again.",
    )


def is_token(value: str) -> bool:
    # Cookie values we set: URL-safe base64 and JWT dots, nothing that needs escaping.
    return 0 < len(value) <= 4096 and all(c.isalnum() or c in "-_." for c in value)


def parse_cookies(headers: list[str]) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for header in headers:
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name and name not in cookies:  # the most specific path comes first
                cookies[name] = value.strip().strip('"')
    return cookies


def first_values(text: str) -> dict[str, str]:
    try:
        parsed = parse_qs(text, keep_blank_values=True, max_num_fields=20)
    except ValueError:
        raise RefusedError(400, "Bad form", "The form could not be read.") from None
    return {key: values[0] for key, values in parsed.items()}


async def _read_body(request: PageRequest, receive: Receive) -> bytes:
    try:
        return await bodies.read_body(receive, request.header("content-length"), MAX_FORM_BYTES)
    except bodies.BodyTooLargeError:
        raise RefusedError(
            413, "Form too large", "The form is larger than this page accepts."
        ) from None


def _rich_status(result: CallResult) -> status_pb2.Status | None:
    for key, value in result.metadata:
        if key == metadata_keys.STATUS_DETAILS and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None
    return None


def reason_of(result: CallResult) -> str:
    status = _rich_status(result)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason: str = info.reason
            return reason
    return ""


def retry_seconds(result: CallResult) -> int | None:
    return statuses.from_rpc_error(result.code, result.message, result.metadata).retry_after_seconds


def public_origin(url: str) -> str:
    """The origin (scheme://host[:port]) of PUBLIC_URL, or "" when it is not set."""
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
