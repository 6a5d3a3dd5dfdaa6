"""Runs the gateway: uvicorn with httptools and uvloop, on a thread of the server process.

uvicorn because its httptools parser and uvloop event loop make it the fastest pure-ASGI server
that embeds cleanly in a thread (it installs no signal handlers off the main thread, takes a
pre-bound socket, and drains connections on `should_exit`); main.py keeps the signals and tells
both doors when to stop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.metadata
import logging
import math
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
import uvicorn

from luman.interceptors.client_address import parse_trusted_proxies
from luman.server.app import App, BindError
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.gateway.app import GatewayApp
from luman.server.gateway.comments import comments_by_name, load_descriptor_set
from luman.server.gateway.device_page import DevicePage, public_origin
from luman.server.gateway.email_pages import EmailPages
from luman.server.gateway.in_process import InProcessCalls
from luman.server.gateway.openapi import build_document
from luman.server.gateway.policy import ClientAddress, CorsPolicy
from luman.server.gateway.routes import build_routes
from luman.server.gateway.tls_protocol import ClientCertificateHttpProtocol
from luman.server.mail.renderers import build_renderers

logger = logging.getLogger(__name__)

READINESS_TIMEOUT_SECONDS = 2.0
KEEP_ALIVE_SECONDS = 5
BACKLOG = 2048


class DatabaseReadiness:
    """`SELECT 1` through the read sessions, on one thread of its own and with a timeout.

    While a check is still running (a database that hangs), later probes wait for that same
    check instead of queueing new ones, so a stuck database never piles up threads. A load
    balancer probes every few seconds: the log gets one line when the checks start failing and
    one when they pass again, not one per probe.
    """

    def __init__(self, sessions: Sessions, timeout: float = READINESS_TIMEOUT_SECONDS) -> None:
        self._sessions = sessions
        self._timeout = timeout
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="readyz")
        self._pending: concurrent.futures.Future[None] | None = None
        self._failing = False  # only touched on the gateway's event loop

    async def __call__(self) -> bool:
        if self._pending is None or self._pending.done():
            self._pending = self._executor.submit(self._check)
        waiter = asyncio.wrap_future(self._pending)
        # Retrieve a late failure so asyncio does not report it as never retrieved.
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._timeout)
        except Exception as exc:  # any failure of the probe means "not ready"
            if not self._failing:
                logger.warning("readiness checks failing: %s", type(exc).__name__)
            self._failing = True
            return False
        if self._failing:
            logger.info("readiness checks pass again")
        self._failing = False
        return True

    def _check(self) -> None:
        with self._sessions.read() as session:
            session.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class GatewayServer:
    """The HTTP/JSON gateway, bound on construction, served from `start()` until `stop()`."""

    def __init__(
        self,
        app: GatewayApp,
        sock: socket.socket,
        readiness: DatabaseReadiness,
        *,
        ssl_context: ssl.SSLContext | None = None,
        hsts: bool = True,
        client_certificates: bool = False,
    ) -> None:
        self.app = app
        self.port: int = sock.getsockname()[1]
        self._socket = sock
        self._readiness = readiness
        config = uvicorn.Config(
            app if hsts else _without_hsts(app),
            loop="none",  # _run() makes the loop: uvloop when available
            # httptools, plus the verified client certificate in the scope (tls_protocol.py).
            http=ClientCertificateHttpProtocol if client_certificates else "httptools",
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,  # the gRPC request log records every call already
            server_header=False,
            proxy_headers=False,  # X-Forwarded-For is judged by TRUSTED_PROXIES in policy.py
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            backlog=BACKLOG,
            # TLS (app.tls): the SSLContext follows certificate reloads by itself (tls.py).
            ssl_context_factory=(lambda _c, _d: ssl_context) if ssl_context is not None else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="http-gateway", daemon=True)

    def start(self) -> None:
        # The socket is already listening: connections made before uvicorn's loop is up wait in
        # the backlog, so callers can use the port as soon as this returns.
        self._thread.start()

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self._server.serve(sockets=[self._socket]))
        except BaseException:  # uvicorn exits with SystemExit on start-up failures
            logger.exception("the HTTP gateway stopped unexpectedly")

    def stop(self, grace: float | None) -> None:
        """Stop accepting connections and let requests in flight finish for up to `grace`
        seconds (None: cancel them)."""
        self.app.draining = True
        if self._thread.is_alive():
            # grace None: cancel requests in flight (force_exit) rather than wait for them.
            self._server.config.timeout_graceful_shutdown = (
                1 if grace is None else max(1, math.ceil(grace))
            )
            self._server.force_exit = grace is None
            self._server.should_exit = True
            self._thread.join(timeout=(grace or 0) + 5)
            if self._thread.is_alive():
                logger.warning("the HTTP gateway did not stop in time")
        self._socket.close()
        self._readiness.close()


def build_gateway(settings: Settings, sessions: Sessions, app: App) -> GatewayServer:
    """Build the gateway for `app` and bind settings.host:settings.http_port (0: a free port).

    Raises:
        BindError: the address is taken or invalid.
        RouteError: an annotation in the protos is malformed.
    """
    routes = build_routes()
    document = build_document(routes, comments_by_name(load_descriptor_set()), version=_version())
    # Each route's method inside the server's chain, wrapped once, run on its worker pool.
    calls = InProcessCalls(
        {route.grpc_path: app.behavior(route.grpc_path) for route in routes.routes},
        app.executor,
        max_concurrent=settings.max_concurrent_rpcs,
    )
    readiness = DatabaseReadiness(sessions)
    addresses = ClientAddress(parse_trusted_proxies(settings.trusted_proxies))
    gateway_app = GatewayApp(
        routes,
        calls,
        cors=CorsPolicy(settings.cors_origin),
        # Settings.from_env has validated TRUSTED_PROXIES already.
        addresses=addresses,
        openapi=document,
        readiness=readiness,
        max_body_bytes=settings.http_max_body_bytes,
        device_page=DevicePage(
            calls, routes, addresses, app.clock, public_origin=public_origin(settings.public_url)
        ),
        email_pages=EmailPages(
            calls, routes, addresses, public_origin=public_origin(settings.public_url)
        ),
        # Prometheus metrics on this port, unless METRICS_PORT gives them one of their own.
        metrics=(
            app.metrics.exposition
            if app.metrics is not None and app.metrics_listener is None
            else None
        ),
    )
    try:
        sock = _bind(settings.host, settings.http_port, reuse_port=settings.worker_slot is not None)
    except BindError:
        readiness.close()
        raise
    if settings.public_url.startswith("https://") and not settings.trusted_proxies and not app.tls:
        # TLS ends at a proxy (the gateway serves plain HTTP): unless the proxy is trusted, every
        # client has its address (one rate-limit budget for all, no network warnings on /device).
        logger.warning(
            "PUBLIC_URL is https but TRUSTED_PROXIES is empty: set it to the TLS proxy's address "
            "so that clients' own addresses are used"
        )
    if settings.production and app.metrics is not None and settings.metrics_port is None:
        # An identity service's metrics (failures by reason, hashing load) are for operators.
        logger.warning(
            "GET /metrics is served on the public HTTP port: set METRICS_PORT (loopback by "
            "default, METRICS_HOST) or block /metrics at the proxy"
        )
    if settings.production and app.tls is None and not settings.trusted_proxies:
        logger.warning(
            "serving plaintext gRPC and HTTP in production without TRUSTED_PROXIES: set "
            "TLS_CERT_FILE/TLS_KEY_FILE, or put a TLS proxy in front and list it there"
        )
    if not settings.public_url:
        # Development: the device login's page and the links in emails are this gateway,
        # wherever it got bound.
        local_url = _local_url(settings.host, sock.getsockname()[1], https=app.tls is not None)
        if app.device_logins is not None:
            app.device_logins.set_public_url(local_url)
        if app.provider_logins is not None:
            app.provider_logins.set_public_url(local_url)
        if app.mail is not None:
            app.mail.use_renderers(build_renderers(settings, local_url))
    return GatewayServer(
        gateway_app,
        sock,
        readiness,
        ssl_context=app.tls.ssl_context() if app.tls is not None else None,
        hsts=settings.hsts,
        client_certificates=app.tls is not None and app.tls.client_ca,
    )


def _without_hsts(app: GatewayApp) -> Callable[..., Awaitable[None]]:
    """`app` without Strict-Transport-Security (HSTS=false): the header is set in several
    places (policy.HSTS), the setting is honoured in one."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        async def strip(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (name, value)
                    for name, value in message["headers"]
                    if name != b"strict-transport-security"
                ]
            await send(message)

        await app(scope, receive, strip)

    return asgi


def _local_url(host: str, port: int, *, https: bool = False) -> str:
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - naming the wildcard, not binding it
        host = "localhost"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{'https' if https else 'http'}://{host}:{port}"


def _bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Listen on host:port; with `reuse_port`, beside the other workers (supervisor.py)."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    options: dict[str, Any] = {}
    if host in ("::", "[::]"):
        options["dualstack_ipv6"] = socket.has_dualstack_ipv6()
    try:
        return socket.create_server(
            (host.strip("[]"), port),
            family=family,
            backlog=BACKLOG,
            reuse_port=reuse_port,
            **options,
        )
    except OSError as exc:
        raise BindError(
            f"cannot listen on {address} (HTTP_PORT): is another server using the port? ({exc})"
        ) from exc


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # uvloop does not build on Windows: plain asyncio then
        return None
    return uvloop.new_event_loop


def _version() -> str:
    try:
        return importlib.metadata.version("luman")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"
