"""Sign-in through an identity provider on the /device page (README "Sign in with GitHub,
Google, GitLab or OIDC"): the "Continue with …" links of the sign-in view lead here.

    GET  /device/providers/<id>/start[?user_code=…]
        StartProviderLogin -> state cookie -> 303 to the provider's authorization URL
    GET  /device/providers/<id>/callback?state=…&code=… (or &error=…&error_description=…)
        the state must be this browser's (its cookie); CompleteProviderLogin -> session cookie
        -> 303 to /device?user_code=…, or the "Link your account" password form
    POST /device/providers/link
        LinkProviderIdentity -> session cookie -> 303 to /device?user_code=…

As the rest of the page, each step is an RPC run in process through the interceptor chain
(DevicePage's), so every outcome leaves a request-log row and the rate limits apply. Start is
a GET (a link, not a form): the CSP's form-action 'self' also covers the redirect a form post
gets (Chromium), which would stop the hop to the provider; the GET only creates a pending
sign-in bound to this browser, which nothing but its callback here can complete.

Cookies, all Path=/device/providers, HttpOnly, and Secure as the page's:

    luman_provider_state  the pending sign-in's state, Max-Age until it expires. SameSite=Lax:
                          the provider's redirect back is a cross-site top-level GET, which
                          carries Lax cookies and not Strict ones. A callback whose state is
                          not this cookie's is refused before any call (login CSRF: someone
                          else's code must not sign this browser in to their account).
    luman_provider_code   the device code the sign-in started from (Lax, as the state), for the
                          failure pages' way back to it.
    luman_provider_link   a link_required answer's link token, until it expires.
                          SameSite=Strict: only the link form's own post (same-site) sends it.
                          It is set in the answer to the callback, a top-level navigation,
                          where browsers accept Strict cookies; the form is rendered there
                          rather than behind a redirect, since a GET at the end of the
                          cross-site redirect chain would not carry it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import logging
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from luman.auth.v1 import auth_service_pb2
from luman.server.clock import Clock
from luman.server.federation.providers import PROVIDER_ID
from luman.server.gateway import device_templates as templates
from luman.server.gateway.device_page import (
    FAILED,
    UNAVAILABLE,
    WRONG_CODE,
    Answer,
    Receive,
    Visit,
    clean_code,
    first_values,
    is_token,
    not_allowed,
    page_url,
    reason_of,
    retry_seconds,
    see_other,
    session_max_age,
    too_many_attempts,
)
from luman.server.gateway.in_process import CallResult
from luman.server.validation import MAX_EMAIL_LENGTH

logger = logging.getLogger(__name__)

Rpc = Callable[[Visit, str, Message], Awaitable[CallResult]]
FormReader = Callable[[Visit, Receive], Awaitable[dict[str, str]]]
SignInOptions = Callable[[Visit], Awaitable[auth_service_pb2.ListIdentityProvidersResponse | None]]

PROVIDERS_PATH = templates.PROVIDERS_PATH
LINK_PATH = templates.LINK_PATH
STATE_COOKIE = "luman_provider_state"
CODE_COOKIE = "luman_provider_code"
LINK_COOKIE = "luman_provider_link"

NOT_THIS_BROWSER = (
    "This sign-in did not start in this browser, or it was already used, so it cannot sign "
    "you in here. Start again from the sign-in page."
)
LINK_EXPIRED = (
    "This request to link your account has expired or was already used. Nothing was linked. "
    "Start the sign-in again."
)
LINK_REFUSED = "That password does not match the account. Try again."
LINK_INCOMPLETE = "Enter the account's password."
INCOMPLETE = "This sign-in link is incomplete. Start again."


@dataclasses.dataclass(frozen=True)
class _Failure:
    """A failure page: HTTP status, title and sentence; `{provider}` is the display name."""

    status: int
    title: str
    text: str


# CompleteProviderLogin's and StartProviderLogin's refusals, by ErrorInfo reason.
_FAILURES = {
    "PROVIDER_NOT_FOUND": _Failure(
        404,
        "Unknown sign-in provider",
        "This server offers no sign-in with {provider}. Go back and choose another way.",
    ),
    "PROVIDER_LOGIN_STATE_INVALID": _Failure(
        400,
        "Sign-in link not valid",
        "This sign-in link was already used, or is not valid. Nothing was changed. Start again.",
    ),
    "PROVIDER_LOGIN_EXPIRED": _Failure(
        400, "Sign-in expired", "This sign-in took too long. Start again."
    ),
    "PROVIDER_EMAIL_NOT_VERIFIED": _Failure(
        403,
        "No verified email address",
        "{provider} has no verified email address for your account, so it cannot sign you in "
        "here. Verify your email address at {provider}, then try again.",
    ),
    "ACCOUNT_USES_OTHER_PROVIDER": _Failure(
        409,
        "This account signs in another way",
        "An account with your {provider} email address already exists, and it signs in with "
        "another provider. Sign in with that one.",
    ),
    "PROVIDER_ERROR": _Failure(
        502,
        "Sign-in failed",
        "{provider} could not complete the sign-in. Try again, or sign in another way.",
    ),
    "PROVIDER_ACCESS_DENIED": _Failure(
        403, "Sign-in cancelled", "You cancelled the sign-in at {provider}. Nothing was changed."
    ),
    "EMAIL_DOMAIN_NOT_ALLOWED": _Failure(
        403,
        "Email address not allowed",
        "This server only accepts {provider} accounts with an email address at an allowed "
        "domain, and yours is not one of them. Sign in another way.",
    ),
    "CODE_REJECTED": _Failure(
        400,
        "Sign-in not accepted",
        "{provider} did not accept this sign-in, so you were not signed in. Start again.",
    ),
    "PROVIDER_UNAVAILABLE": _Failure(
        503,
        "{provider} is not responding",
        "{provider} is not responding right now. Try again in a few minutes, or sign in "
        "another way.",
    ),
}
# The provider's answer was refused or could not be trusted.
_UNVERIFIED = _Failure(
    502,
    "Sign-in not verified",
    "{provider}'s answer could not be verified, so you were not signed in. Start again, or "
    "sign in another way.",
)
for _reason in ("ID_TOKEN_INVALID", "NONCE_MISMATCH", "PROVIDER_RESPONSE_INVALID"):
    _FAILURES[_reason] = _UNVERIFIED


class ProviderPages:
    """Serves /device/providers/… for DevicePage, with its `rpc` (an RPC in process, with the
    visit's session and client address), `read_form` (a POSTed form, Origin and CSRF token
    checked) and `sign_in_options` (the providers, as ListIdentityProviders lists them)."""

    def __init__(
        self, rpc: Rpc, read_form: FormReader, clock: Clock, sign_in_options: SignInOptions
    ) -> None:
        self._rpc = rpc
        self._sign_in_options = sign_in_options
        self._read_form = read_form
        self._clock = clock

    async def dispatch(self, visit: Visit, path: str, receive: Receive) -> Answer:
        parts = path[len(PROVIDERS_PATH) + 1 :].split("/")
        method = visit.request.method
        if path == LINK_PATH:
            if method != "POST":
                return not_allowed("POST")
            return await self._link(visit, await self._read_form(visit, receive))
        if len(parts) != 2 or parts[1] not in ("start", "callback"):
            return 404, templates.message("Page not found", "There is no such page."), []
        # GET only: a HEAD would start a sign-in (or spend one) for nothing.
        if method != "GET":
            return not_allowed("GET")
        provider_id, step = parts
        query = first_values(visit.request.query.decode("latin-1"))
        if not PROVIDER_ID.match(provider_id):
            user_code = clean_code(query.get("user_code", ""))
            not_found = _FAILURES["PROVIDER_NOT_FOUND"]
            return self._failure_page(not_found, provider_id[:40], user_code)
        if step == "start":
            return await self._start(visit, provider_id, clean_code(query.get("user_code", "")))
        return await self._callback(visit, provider_id, query)

    async def _start(self, visit: Visit, provider_id: str, user_code: str) -> Answer:
        request = auth_service_pb2.StartProviderLoginRequest(
            provider=provider_id, user_code=user_code
        )
        result = await self._rpc(visit, "StartProviderLogin", request)
        if not isinstance(result.response, auth_service_pb2.StartProviderLoginResponse):
            if result.code == grpc.StatusCode.INVALID_ARGUMENT:  # the user code is malformed
                return _page(400, "Code not valid", WRONG_CODE, user_code="")
            return await self._failure(visit, result, provider_id, user_code)
        started = result.response
        if not is_token(started.state):
            logger.error("StartProviderLogin answered a state that is no cookie value")
            return _page(500, "Something went wrong", FAILED, user_code=user_code)
        max_age = self._seconds_until(started.expire_time)
        visit.set_cookie(
            STATE_COOKIE, started.state, same_site="Lax", max_age=max_age, path=PROVIDERS_PATH
        )
        # Always written: an older sign-in's code must not be the way back from this one.
        visit.set_cookie(
            CODE_COOKIE,
            user_code,
            same_site="Lax",
            max_age=max_age if user_code else 0,
            path=PROVIDERS_PATH,
        )
        return see_other(started.authorization_url)

    async def _callback(self, visit: Visit, provider_id: str, query: dict[str, str]) -> Answer:
        state = query.get("state", "")
        expected = visit.cookies.get(STATE_COOKIE, "")
        user_code = clean_code(visit.cookies.get(CODE_COOKIE, ""))
        if (
            not state
            or not is_token(expected)
            or not hmac.compare_digest(state.encode(), expected.encode())
        ):
            # Not calling CompleteProviderLogin: that would spend the state of whoever's
            # sign-in this is (a login CSRF, a link opened in another browser, a replay).
            logger.warning(
                "provider sign-in callback for %s refused: %s",
                provider_id,
                "no state cookie" if not is_token(expected) else "state is not the cookie's",
            )
            return _page(400, "Sign-in not started here", NOT_THIS_BROWSER, user_code=user_code)
        # Called with the provider's error too, when it sent one: every outcome is recorded.
        request = auth_service_pb2.CompleteProviderLoginRequest(
            provider=provider_id,
            state=state,
            code=query.get("code", ""),
            error=query.get("error", ""),
            error_description=query.get("error_description", ""),
        )
        result = await self._rpc(visit, "CompleteProviderLogin", request)
        if result.code != grpc.StatusCode.RESOURCE_EXHAUSTED:
            # The state is spent (a rate-limited call never reached the service: a reload may
            # try again).
            self._forget_sign_in(visit)
        if not isinstance(result.response, auth_service_pb2.CompleteProviderLoginResponse):
            if result.code == grpc.StatusCode.INVALID_ARGUMENT:
                return _page(400, "Sign-in link not valid", INCOMPLETE, user_code=user_code)
            return await self._failure(visit, result, provider_id, user_code)
        completed = result.response
        user_code = clean_code(completed.user_code) or user_code
        if completed.WhichOneof("result") == "sign_in":
            tokens = completed.sign_in.tokens
            visit.start_session(tokens.access_token, session_max_age(tokens, self._clock))
            return see_other(page_url(user_code))
        link = completed.link_required
        if not is_token(link.link_token):
            logger.error("CompleteProviderLogin answered a link token that is no cookie value")
            return _page(500, "Something went wrong", FAILED, user_code=user_code)
        visit.set_cookie(
            LINK_COOKIE,
            link.link_token,
            same_site="Strict",
            max_age=self._seconds_until(link.expire_time),
            path=PROVIDERS_PATH,
        )
        page = templates.link_account(
            csrf=visit.csrf,
            provider=provider_id,
            provider_name=await self._provider_name(visit, provider_id),
            email=link.email,
            user_code=user_code,
        )
        return 200, page, []

    async def _link(self, visit: Visit, form: dict[str, str]) -> Answer:
        user_code = clean_code(form.get("user_code", ""))
        provider_id = form.get("provider", "")
        if not PROVIDER_ID.match(provider_id):
            provider_id = ""
        email = form.get("email", "")[:MAX_EMAIL_LENGTH]
        token = visit.cookies.get(LINK_COOKIE, "")
        if not is_token(token):
            return _page(400, "Link expired", LINK_EXPIRED, user_code=user_code)

        async def again(status: int, error: str) -> Answer:
            name = await self._provider_name(visit, provider_id) if provider_id else "provider"
            page = templates.link_account(
                csrf=visit.csrf,
                provider=provider_id,
                provider_name=name,
                email=email,
                user_code=user_code,
                error=error,
            )
            return status, page, []

        password = form.get("password", "")
        if not password:
            return await again(400, LINK_INCOMPLETE)
        result = await self._rpc(
            visit,
            "LinkProviderIdentity",
            auth_service_pb2.LinkProviderIdentityRequest(link_token=token, password=password),
        )
        if isinstance(result.response, auth_service_pb2.LinkProviderIdentityResponse):
            linked = result.response
            self._forget_link(visit)
            visit.start_session(
                linked.tokens.access_token, session_max_age(linked.tokens, self._clock)
            )
            return see_other(page_url(clean_code(linked.user_code) or user_code))
        code, reason = result.code, reason_of(result)
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return await again(401, LINK_REFUSED)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return await again(400, LINK_INCOMPLETE)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            status, text, _ = self._limited(result)
            return await again(status, text)
        if code == grpc.StatusCode.UNAVAILABLE:
            return await again(503, UNAVAILABLE)
        if reason == "LINK_TOKEN_INVALID" or code == grpc.StatusCode.FAILED_PRECONDITION:
            self._forget_link(visit)
            return _page(400, "Link expired", LINK_EXPIRED, user_code=user_code)
        if code == grpc.StatusCode.ALREADY_EXISTS:  # IDENTITY_ALREADY_LINKED
            self._forget_link(visit)
            name = await self._provider_name(visit, provider_id) if provider_id else "provider"
            text = (
                f"This {name} account was linked to an account meanwhile. Continue with {name} "
                "again to sign in."
            )
            return _page(409, "Already linked", text, user_code=user_code)
        logger.warning("provider link: %s answered %s", code.name, reason or "no reason")
        return _page(500, "Something went wrong", FAILED, user_code=user_code)

    # Plumbing.

    async def _failure(
        self, visit: Visit, result: CallResult, provider_id: str, user_code: str
    ) -> Answer:
        """A refused StartProviderLogin or CompleteProviderLogin as a page naming the provider,
        with the way back to sign-in."""
        code, reason = result.code, reason_of(result)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            status, text, headers = self._limited(result)
            page = templates.provider_failure("Too many attempts", text, user_code=user_code)
            return status, page, headers
        failure = _FAILURES.get(reason)
        if failure is None:
            if code == grpc.StatusCode.UNAVAILABLE:
                failure = _Failure(503, "Service unavailable", UNAVAILABLE)
            else:
                logger.warning("provider sign-in: %s answered %s", code.name, reason or "no reason")
                failure = _Failure(500, "Something went wrong", FAILED)
        name = provider_id
        if "{provider}" in failure.title + failure.text and reason != "PROVIDER_NOT_FOUND":
            name = await self._provider_name(visit, provider_id)
        answer = self._failure_page(failure, name, user_code)
        seconds = retry_seconds(result)
        if failure.status == 503 and seconds:
            answer[2].append((b"retry-after", str(seconds).encode()))
        return answer

    @staticmethod
    def _failure_page(failure: _Failure, provider_name: str, user_code: str) -> Answer:
        page = templates.provider_failure(
            failure.title.format(provider=provider_name),
            failure.text.format(provider=provider_name),
            user_code=user_code,
        )
        return failure.status, page, []

    @staticmethod
    def _limited(result: CallResult) -> tuple[int, str, list[tuple[bytes, bytes]]]:
        """A RESOURCE_EXHAUSTED answer: the rate limit (429), or the server too busy hashing
        passwords (SERVER_BUSY, 503)."""
        seconds = retry_seconds(result) or 60
        headers = [(b"retry-after", str(seconds).encode())]
        if reason_of(result) == "SERVER_BUSY":
            return 503, UNAVAILABLE, headers
        return 429, too_many_attempts(result), headers

    async def _provider_name(self, visit: Visit, provider_id: str) -> str:
        """The provider's display name (ListIdentityProviders), or its id."""
        options = await self._sign_in_options(visit)
        if options is not None:
            for provider in options.providers:
                if provider.id == provider_id and provider.display_name:
                    return str(provider.display_name)
        return provider_id

    def _seconds_until(self, time: Timestamp) -> int:
        remaining = time.ToDatetime(tzinfo=dt.UTC) - self._clock()
        return max(1, int(remaining.total_seconds()))

    @staticmethod
    def _forget_sign_in(visit: Visit) -> None:
        for name in (STATE_COOKIE, CODE_COOKIE):
            visit.set_cookie(name, "", same_site="Lax", max_age=0, path=PROVIDERS_PATH)

    @staticmethod
    def _forget_link(visit: Visit) -> None:
        visit.set_cookie(LINK_COOKIE, "", same_site="Strict", max_age=0, path=PROVIDERS_PATH)


def _page(status: int, title: str, text: str, *, user_code: str) -> Answer:
    return status, templates.provider_failure(title, text, user_code=user_code), []
