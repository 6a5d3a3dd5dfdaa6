"""The gateway as a plain ASGI application.

Plain ASGI rather than Starlette: the routes come from descriptors with grpc-gateway template
semantics (405 with Allow, percent-decoding per variable) that a framework router would only
get in the way of, and a request crosses one function instead of a middleware stack.

One request: route match (404/405) -> bounded body (413) -> media type (415) -> request message
(400) -> the method inside the server's interceptor chain, in process (in_process.py) -> JSON
or google.rpc.Status. Every
response carries the security headers and, for allowed origins, the CORS headers. Whatever
goes wrong inside becomes a logged 500 with a fixed message, never a stack trace.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import grpc

from luman.interceptors import metadata_keys
from luman.server.gateway import bodies, caching, oauth
from luman.server.gateway import status as statuses
from luman.server.gateway.device_page import DevicePage, is_page_path
from luman.server.gateway.email_pages import EmailPages, is_email_page_path
from luman.server.gateway.in_process import InProcessCalls, Metadata, grpc_peer
from luman.server.gateway.policy import (
    HSTS,
    SECURITY_HEADERS,
    VARY_ORIGIN,
    ClientAddress,
    CorsPolicy,
    Header,
)
from luman.server.gateway.routes import PathDecodeError, RouteMatch, RouteTable
from luman.server.gateway.status import ErrorResponse, GatewayError, bad_request
from luman.server.gateway.transcode import build_request, response_json

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Readiness = Callable[[], Awaitable[bool]]
# A Prometheus scrape: the body and its content type (metrics.py).
Exposition = Callable[[], tuple[bytes, str]]

OPENAPI_PATH = "/openapi.json"
HEALTH_PATHS = ("/healthz", "/readyz", OPENAPI_PATH)
METRICS_PATH = "/metrics"
MAX_USER_AGENT = 512
# Rate-limit metadata of the server, passed on as HTTP headers under their usual names.
# And Cache-Control, from a method whose answer may be cached (caching.py).
_FORWARDED_METADATA = {
    name: name.encode() for name in (*metadata_keys.RATE_LIMIT_HEADERS, metadata_keys.CACHE_CONTROL)
}


class _Request:
    """What the handler needs from the ASGI scope, decoded once."""

    def __init__(self, scope: Scope) -> None:
        self.method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        self.raw_path = raw_path.split(b"?", 1)[0]
        self.query: bytes = scope.get("query_string", b"")
        self.scheme: str = scope.get("scheme", "http")
        client = scope.get("client")
        self.peer: str = client[0] if client else ""
        # The ASGI TLS extension's verified client certificate (server.py puts it there).
        chain = scope.get("extensions", {}).get("tls", {}).get("client_cert_chain") or ()
        self.client_certificate: bytes | None = chain[0].encode("ascii") if chain else None
        self.headers: dict[str, list[str]] = {}
        for name, value in scope.get("headers", ()):
            self.headers.setdefault(name.decode("latin-1").lower(), []).append(
                value.decode("latin-1")
            )

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None


class GatewayApp:
    def __init__(
        self,
        routes: RouteTable,
        calls: InProcessCalls,
        *,
        cors: CorsPolicy,
        addresses: ClientAddress,
        openapi: dict[str, Any],
        readiness: Readiness,
        max_body_bytes: int,
        device_page: DevicePage | None = None,
        email_pages: EmailPages | None = None,
        metrics: Exposition | None = None,
    ) -> None:
        self._routes = routes
        # GET /metrics (None: 404, when they are off or served on METRICS_PORT instead).
        self._metrics = metrics
        self._device_page = device_page  # /device: the device login's approval page
        self._email_pages = email_pages  # /email/verify, /password/reset: the messages' links
        self._calls = calls
        self._cors = cors
        self._addresses = addresses
        self._openapi = json.dumps(openapi, separators=(",", ":")).encode()
        self._readiness = readiness
        self._max_body = max_body_bytes
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets: the server closes the connection
        request = _Request(scope)
        headers: list[Header] = []
        try:
            await self._handle(request, receive, send, headers)
        except bodies.ClientGoneError:
            return
        except GatewayError as exc:
            await self._respond_error(request, send, exc.response(), headers)
        except Exception:
            logger.exception("gateway error on %s %s", request.method, request.raw_path[:200])
            error = GatewayError(500, grpc.StatusCode.INTERNAL, "INTERNAL", "internal error")
            await self._respond_error(request, send, error.response(), headers)

    async def _handle(
        self, request: _Request, receive: Receive, send: Send, headers: list[Header]
    ) -> None:
        try:
            path = request.raw_path.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("INVALID_PATH", "the path is not UTF-8") from None
        if self._device_page is not None and is_page_path(path):
            await self._device_page.handle(request, receive, send, path)
            return
        if self._email_pages is not None and is_email_page_path(path):
            await self._email_pages.handle(request, receive, send, path)
            return
        if request.method == "OPTIONS":
            await self._options(request, path, send)
            return
        if path in HEALTH_PATHS:
            if request.method != "GET":
                raise _method_not_allowed(("GET",), headers)
            await self._builtin(request, path, send)
            return
        if path == METRICS_PATH and self._metrics is not None:
            if request.method != "GET":
                raise _method_not_allowed(("GET",), headers)
            # Off the event loop: in memory, but a server that has served every method with
            # a few codes writes ~180 kB in ~16 ms (metrics.py).
            body, content_type = await asyncio.to_thread(self._metrics)
            await self._send(
                request, send, 200, body, [(b"content-type", content_type.encode())], cors=False
            )
            return
        try:
            match = self._routes.match(request.method, path)
        except PathDecodeError as exc:
            raise bad_request(
                "INVALID_PATH", f"{exc} is not percent-encoded UTF-8", field=str(exc)
            ) from None
        if match is None:
            allowed = self._routes.allowed_methods(path)
            if allowed:
                raise _method_not_allowed(allowed, headers)
            raise GatewayError(404, grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "no such endpoint")
        if match.route.oauth_endpoint:
            try:
                message = await self._oauth_request(request, receive, match)
            except GatewayError as exc:
                await self._respond_error(request, send, oauth.refusal(exc), headers)
                return
        else:
            body = await self._read_body(request, receive)
            if body.strip() and match.route.body:
                _check_media_type(request.header("content-type"))
            message = build_request(match, _query_pairs(request.query), body)
        await self._call(request, match, message, send)

    async def _oauth_request(self, request: _Request, receive: Receive, match: RouteMatch) -> Any:
        """The request message of an OAuth endpoint (oauth.py): a form or JSON body, the client
        id possibly in HTTP Basic credentials."""
        body = await self._read_body(request, receive)
        if oauth.is_form(request.header("content-type")):
            body = oauth.form_to_json(body, match.route.method.input_type)
        elif body.strip():
            _check_media_type(request.header("content-type"))
        client_id = oauth.basic_client_id(request.header("authorization"))
        if client_id is not None:
            body = oauth.with_client_id(body, client_id)
        return build_request(match, _query_pairs(request.query), body)

    async def _call(self, request: _Request, match: RouteMatch, message: Any, send: Send) -> None:
        metadata = self._metadata(request, oauth_endpoint=match.route.oauth_endpoint)
        peer = grpc_peer(self._addresses.client_ip(request.peer, _forwarded_for(request)))
        result = await self._calls.call(
            match.route, message, metadata, peer, request.client_certificate
        )
        headers = _forwarded_headers(result.metadata)
        if result.response is not None:
            body = response_json(match.route, result.response)
            if caching.is_cacheable(request.method, headers):
                tag = caching.etag(body)
                headers.append((b"etag", tag.encode()))
                if caching.not_modified(request.headers.get("if-none-match", []), tag):
                    await self._send(request, send, 304, b"", headers, cors=True)
                    return
            await self._respond(request, send, 200, body, headers)
            return
        error = statuses.from_rpc_error(result.code, result.message, result.metadata)
        if match.route.oauth_endpoint:
            reason, fields = statuses.error_info(result.code, result.metadata)
            error = oauth.oauth_error(error, result.code, result.message, reason, fields)
        if error.retry_after_seconds is not None and not any(
            name == metadata_keys.RETRY_AFTER.encode() for name, _ in headers
        ):
            headers.append(
                (metadata_keys.RETRY_AFTER.encode(), str(error.retry_after_seconds).encode())
            )
        await self._respond_error(request, send, error, headers)

    def _metadata(self, request: _Request, *, oauth_endpoint: bool = False) -> Metadata:
        """The call's metadata, as a gRPC client would send it: credentials, user agent,
        request id and trace context. (The client's address is the call's peer.)"""
        metadata: list[tuple[str, str | bytes]] = []
        # An OAuth endpoint is public: its Authorization header can only be the client's Basic
        # credentials (read in _oauth_request), never a token for the call.
        forwarded = () if oauth_endpoint else request.headers.get("authorization", ())
        for value in forwarded:
            if not value.isascii() or not value.isprintable():
                raise bad_request(
                    "INVALID_HEADER", "the Authorization header must be printable ASCII"
                )
            metadata.append((metadata_keys.AUTHORIZATION, value))
        user_agent = request.header("user-agent")
        if user_agent:
            # gRPC metadata is printable ASCII; a user agent is informative, so clean it.
            cleaned = "".join(c for c in user_agent if c.isascii() and c.isprintable())
            metadata.append((metadata_keys.USER_AGENT, cleaned[:MAX_USER_AGENT]))
        request_id = request.header(metadata_keys.REQUEST_ID)
        if request_id:
            # Kept on audit events only if printable ASCII of at most 64 (audit/record.py).
            metadata.append((metadata_keys.REQUEST_ID, request_id))
        # W3C trace-context, for the call's span when tracing is on (interceptors/tracing.py:
        # a malformed one is ignored there, as the specification says).
        # Several tracestate headers are one list (W3C trace-context 3.3.1.1).
        for key in (metadata_keys.TRACEPARENT, metadata_keys.TRACESTATE):
            value = ",".join(request.headers.get(key, ()))
            if value and value.isascii() and value.isprintable():
                metadata.append((key, value))
        return tuple(metadata)

    async def _read_body(self, request: _Request, receive: Receive) -> bytes:
        try:
            return await bodies.read_body(receive, request.header("content-length"), self._max_body)
        except bodies.BodyTooLargeError:
            raise _too_large(self._max_body) from None

    async def _options(self, request: _Request, path: str, send: Send) -> None:
        if path in HEALTH_PATHS:
            allowed: tuple[str, ...] = ("GET",)
        else:
            try:
                allowed = self._routes.allowed_methods(path)
            except PathDecodeError:
                allowed = ()
        if not allowed:
            raise GatewayError(404, grpc.StatusCode.NOT_FOUND, "NOT_FOUND", "no such endpoint")
        methods = (*allowed, "OPTIONS")
        origin = request.header("origin")
        headers: list[Header] = [(b"allow", ", ".join(methods).encode())]
        if origin is not None and request.header("access-control-request-method") is not None:
            headers += self._cors.preflight_headers(origin, methods)
        await self._send(request, send, 204, b"", headers, cors=False)

    async def _builtin(self, request: _Request, path: str, send: Send) -> None:
        if path == OPENAPI_PATH:
            await self._respond(request, send, 200, self._openapi, [])
        elif path == "/healthz":
            await self._respond(request, send, 200, b'{"status":"ok"}', [])
        elif not self.draining and await self._readiness():
            await self._respond(request, send, 200, b'{"status":"ready"}', [])
        else:
            await self._respond(request, send, 503, b'{"status":"unavailable"}', [])

    async def _respond_error(
        self, request: _Request, send: Send, error: ErrorResponse, headers: list[Header]
    ) -> None:
        await self._respond(request, send, error.http_status, error.body, headers)

    async def _respond(
        self, request: _Request, send: Send, status: int, body: bytes, headers: list[Header]
    ) -> None:
        headers = [(b"content-type", b"application/json"), *headers]
        await self._send(request, send, status, body, headers, cors=True)

    async def _send(
        self,
        request: _Request,
        send: Send,
        status: int,
        body: bytes,
        headers: list[Header],
        *,
        cors: bool,
    ) -> None:
        headers = [*headers, *caching.security_headers(SECURITY_HEADERS, headers), VARY_ORIGIN]
        if cors:
            headers += self._cors.response_headers(request.header("origin"))
        if self._addresses.is_https(
            request.scheme, request.peer, request.header("x-forwarded-proto")
        ):
            headers.append(HSTS)
        if status != 304:  # a 304's Content-Length would have to be the 200's (RFC 9110 8.6)
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _method_not_allowed(allowed: tuple[str, ...], headers: list[Header]) -> GatewayError:
    headers.append((b"allow", ", ".join(allowed).encode()))
    return GatewayError(
        405, grpc.StatusCode.UNIMPLEMENTED, "METHOD_NOT_ALLOWED", "method not allowed"
    )


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        grpc.StatusCode.INVALID_ARGUMENT,
        "BODY_TOO_LARGE",
        f"the request body is larger than {limit} bytes",
    )


def _check_media_type(content_type: str | None) -> None:
    """JSON only. Besides clarity this is a CSRF guard: a cross-site HTML form can post
    text/plain or form data without a preflight, but never application/json."""
    media_type, _, params = (content_type or "").partition(";")
    media_type = media_type.strip().lower()
    if media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
                "utf-8",
                "utf8",
            ):
                break
        else:
            return
    raise GatewayError(
        415,
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_MEDIA_TYPE",
        "the request body must be JSON: send 'Content-Type: application/json'",
    )


def _query_pairs(query: bytes) -> list[tuple[str, str]]:
    if not query:
        return []
    try:
        return parse_qsl(
            query.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
            max_num_fields=100,
        )
    except (ValueError, UnicodeDecodeError):
        raise bad_request("INVALID_QUERY", "the query string is malformed") from None


def _forwarded_for(request: _Request) -> str | None:
    # Several X-Forwarded-For headers are one list (RFC 9110 5.3), in order.
    return ", ".join(request.headers.get("x-forwarded-for", ())) or None


def _forwarded_headers(metadata: Metadata) -> list[Header]:
    headers: list[Header] = []
    for key, value in metadata:
        name = _FORWARDED_METADATA.get(key)
        if name is not None and isinstance(value, str) and value.isascii():
            headers.append((name, value.encode()))
    return headers


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
