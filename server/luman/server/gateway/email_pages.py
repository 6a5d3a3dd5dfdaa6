"""The pages the links in verification and password-reset messages open (README "Email:
verification and password reset").

    GET  /email/verify?token=…&email=…     a "Verify" button, nothing more
    POST /email/verify                     VerifyEmail -> the done page
    GET  /password/reset?token=…&email=…   the new-password form
    POST /password/reset                   ResetPassword -> the done page (or the form again)

A GET never changes anything: mail scanners and link previews open links. The `email` in the
link is only shown (and given to password managers); the token alone decides.

As /device (device_page.py), the pages are clients of the API: each action is an RPC run in
process through the server's interceptor chain, so rate limits, logging and error mapping
apply. Server-rendered, no script, the page CSP (own stylesheet and forms only),
Cache-Control no-store, and Referrer-Policy no-referrer: the token in the URL must reach no
other site, nor the stylesheet's request log. Every form carries a per-browser CSRF token that
must match its cookie (HttpOnly, SameSite=Strict, Path the page's). With no-referrer, browsers
send `Origin: null` with the page's own form posts, so a missing or null Origin is allowed
and another origin refused; Fetch Metadata, where sent, must say same-origin.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.message import Message

from luman.auth.v1 import auth_service_pb2
from luman.interceptors import metadata_keys
from luman.server.gateway import caching
from luman.server.gateway import email_templates as templates
from luman.server.gateway.device_page import (
    MAX_USER_AGENT,
    Answer,
    PageRequest,
    Receive,
    RefusedError,
    Send,
    Visit,
    first_values,
    own_origins,
    read_form,
    reason_of,
)
from luman.server.gateway.in_process import CallResult, InProcessCalls, grpc_peer
from luman.server.gateway.policy import HSTS, PAGE_SECURITY_HEADERS, ClientAddress, Header
from luman.server.gateway.routes import Route, RouteTable
from luman.server.validation import MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES

logger = logging.getLogger(__name__)

VERIFY_PATH = templates.VERIFY_PATH
RESET_PATH = templates.RESET_PATH
CSRF_COOKIE = "luman_email_csrf"
MAX_TOKEN_LENGTH = 128
MAX_EMAIL_LENGTH = 254
# The page headers, with no referrer at all (the token is in the URL).
EMAIL_PAGE_HEADERS: tuple[Header, ...] = tuple(
    (name, b"no-referrer" if name == b"referrer-policy" else value)
    for name, value in PAGE_SECURITY_HEADERS
)
_SERVICE = "/" + auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name + "/"

INVALID = (
    "This link is not valid: it may be incomplete or no longer work. "
    "Use the link in the newest message, or ask for a new one."
)
EXPIRED = "This link has expired. Ask for a new message."
# EMAIL_CODE_USED: this link's message was used, or a newer message replaced it.
USED = (
    "This link was already used, or a newer message replaced it. "
    "Use the link in the newest message, or ask for a new one."
)
# /email/verify: a used link most often means the address is verified already (the link was
# pressed twice, or a mail scanner posted it); the page cannot tell who is asking.
VERIFY_USED = (
    "This link was already used, or a newer message replaced it. If you used it, your address "
    "may already be verified: sign in to check (the CLI shows it with `luman whoami`). "
    "Otherwise use the link in the newest message, or ask for a new one."
)
TOO_MANY = "Too many attempts. Wait a few minutes, then try again."
UNAVAILABLE = "The service is unavailable right now. Try again in a moment."
FAILED = "Something went wrong. Try again."
MISMATCH = "The two passwords are not the same. Type the new password twice."
TOO_SHORT = f"The new password is too short: use at least {MIN_PASSWORD_BYTES} characters."
TOO_LONG = f"The new password is too long: use at most {MAX_PASSWORD_BYTES} bytes."


def is_email_page_path(path: str) -> bool:
    return path in (VERIFY_PATH, RESET_PATH)


class EmailPages:
    """Serves /email/verify and /password/reset. Args as DevicePage's."""

    def __init__(
        self,
        calls: InProcessCalls,
        routes: RouteTable,
        addresses: ClientAddress,
        *,
        public_origin: str = "",
    ) -> None:
        self._calls = calls
        self._routes = {route.grpc_path: route for route in routes.routes}
        self._addresses = addresses
        self._public_origin = public_origin.rstrip("/").lower()
        self._public_https = self._public_origin.startswith("https://")

    async def handle(self, request: PageRequest, receive: Receive, send: Send, path: str) -> None:
        visit = Visit(
            request, self._addresses, self._public_https, path=path, csrf_cookie=CSRF_COOKIE
        )
        try:
            status, body, headers = await self._dispatch(visit, path, receive)
        except RefusedError as exc:
            status, body, headers = exc.status, templates.message(exc.title, exc.text), []
        except Exception:
            # The path only: the query holds the token.
            logger.exception("email page error on %s %s", request.method, path)
            status, body, headers = 500, templates.message("Something went wrong", FAILED), []
        await self._send(
            visit, send, status, body.encode() if isinstance(body, str) else body, headers
        )

    async def _dispatch(self, visit: Visit, path: str, receive: Receive) -> Answer:
        method = visit.request.method
        if method in ("GET", "HEAD"):
            query = first_values(visit.request.query.decode("latin-1"))
            token, email = (
                _clean_token(query.get("token", "")),
                _clean_email(query.get("email", "")),
            )
            if not token:
                return 400, templates.message("Incomplete link", INVALID), []
            if path == VERIFY_PATH:
                return 200, templates.verify_form(csrf=visit.csrf, token=token, email=email), []
            return 200, templates.reset_form(csrf=visit.csrf, token=token, email=email), []
        if method != "POST":
            page = templates.message("Method not allowed", "This page does not accept that.")
            return 405, page, [(b"allow", b"GET, POST")]
        form = await self._form(visit, receive)
        token = _clean_token(form.get("token", ""))
        if path == VERIFY_PATH:
            return await self._verify(visit, token)
        return await self._reset(visit, form, token)

    async def _verify(self, visit: Visit, token: str) -> Answer:
        result = await self._rpc(
            visit, "VerifyEmail", auth_service_pb2.VerifyEmailRequest(token=token)
        )
        if result.response is None:
            return self._verify_failure(result)
        assert isinstance(result.response, auth_service_pb2.VerifyEmailResponse)
        return 200, templates.verified(email=result.response.user.email), []

    async def _reset(self, visit: Visit, form: dict[str, str], token: str) -> Answer:
        password = form.get("new_password", "")
        revoke = form.get("revoke_cli_tokens", "") == "on"
        email = _clean_email(form.get("email", ""))

        def again(error: str) -> Answer:
            page = templates.reset_form(
                csrf=visit.csrf, token=token, email=email, error=error, revoke_cli_tokens=revoke
            )
            return 400, page, []

        if password != form.get("confirm_password", ""):
            return again(MISMATCH)
        size = len(password.encode())
        if size < MIN_PASSWORD_BYTES:
            return again(TOO_SHORT)
        if size > MAX_PASSWORD_BYTES:
            return again(TOO_LONG)
        request = auth_service_pb2.ResetPasswordRequest(
            token=token, new_password=password, revoke_cli_tokens=revoke
        )
        result = await self._rpc(visit, "ResetPassword", request)
        if result.response is None:
            return self._failure(result, "Password not changed")
        assert isinstance(result.response, auth_service_pb2.ResetPasswordResponse)
        page = templates.reset_done(
            revoked_sessions=result.response.revoked_sessions,
            revoked_cli_tokens=result.response.revoked_cli_tokens,
            cli_tokens=revoke,
        )
        return 200, page, []

    def _verify_failure(self, result: CallResult) -> Answer:
        """A heading that names what is wrong with the link, not "not verified": a used link's
        address is often verified already."""
        code, reason = result.code, reason_of(result)
        if reason == "EMAIL_CODE_EXPIRED":
            return 410, templates.message("This link has expired", EXPIRED), []
        if reason == "EMAIL_CODE_USED":
            return 409, templates.message("This link was already used", VERIFY_USED), []
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT):
            return 400, templates.message("This link is not valid", INVALID), []
        return self._failure(result, "Email address not verified")

    def _failure(self, result: CallResult, title: str) -> Answer:
        code, reason = result.code, reason_of(result)
        if reason == "EMAIL_CODE_EXPIRED":
            return 410, templates.message(title, EXPIRED), []
        if reason == "EMAIL_CODE_USED":
            return 409, templates.message(title, USED), []
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT):
            return 400, templates.message(title, INVALID), []
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return 429, templates.message(title, TOO_MANY), []
        if code == grpc.StatusCode.UNAVAILABLE:
            return 503, templates.message(title, UNAVAILABLE), []
        logger.warning("email page: %s answered %s", code.name, reason or "no reason")
        return 500, templates.message(title, FAILED), []

    async def _rpc(self, visit: Visit, name: str, message: Message) -> CallResult:
        route: Route = self._routes[_SERVICE + name]
        metadata: list[tuple[str, str | bytes]] = []
        user_agent = visit.request.header("user-agent")
        if user_agent:
            cleaned = "".join(c for c in user_agent if c.isascii() and c.isprintable())
            metadata.append((metadata_keys.USER_AGENT, cleaned[:MAX_USER_AGENT]))
        return await self._calls.call(route, message, tuple(metadata), grpc_peer(visit.client_ip))

    async def _form(self, visit: Visit, receive: Receive) -> dict[str, str]:
        """The POSTed form, once its origin and CSRF token are checked. With no-referrer,
        browsers send `Origin: null` with the page's own posts: allowed, the CSRF token and
        its SameSite=Strict cookie decide."""
        return await read_form(
            visit.request,
            receive,
            expected_csrf=visit.cookies.get(CSRF_COOKIE, ""),
            own_origin=own_origins(visit.request, visit.https, self._public_origin),
            allow_null_origin=True,
        )

    async def _send(
        self, visit: Visit, send: Send, status: int, body: bytes, headers: list[Header]
    ) -> None:
        headers = [(b"content-type", b"text/html; charset=utf-8"), *headers]
        headers += caching.security_headers(EMAIL_PAGE_HEADERS, headers)
        headers += [(b"set-cookie", cookie.encode()) for cookie in visit.set_cookies]
        if visit.https:
            headers.append(HSTS)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if visit.request.method == "HEAD" else body}
        )


def _forbidden() -> RefusedError:
    return RefusedError(
        403,
        "Request refused",
        "This form could not be verified. Open the link from the message again and retry.",
    )


def _clean_token(value: str) -> str:
    """A link token as it can be (URL-safe base64), else nothing: the server judges it."""
    value = value.strip()
    if len(value) > MAX_TOKEN_LENGTH or not all(c.isalnum() or c in "-_" for c in value):
        return ""
    return value


def _clean_email(value: str) -> str:
    """The address the link names, for display only."""
    value = value.strip()[:MAX_EMAIL_LENGTH]
    return value if value.isprintable() else ""
