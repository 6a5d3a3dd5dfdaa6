"""The gateway's way in: an HTTP request calls the method's behaviour, wrapped in the server's
whole interceptor chain, in this process, on the gRPC server's own worker threads.

Both doors therefore behave the same (logging, rate limiting, authentication, error mapping:
the very same stage objects, limiter buckets and caches) without the gateway serialising its
request to protobuf bytes, carrying them over a loopback HTTP/2 stream and parsing them back,
then doing it all again for the answer. That second hop cost `GET /auth/me` twice the CPU of a
gRPC GetMe (issue 14; BENCHMARKS.md has the figures before and after).

What grpcio would do for a call is done here too: the caller's identity comes from a peer and
metadata (InProcessContext, read by the logging stage like any call's); at most
GRPC_MAX_CONCURRENT_RPCS gateway calls run at once, as grpcio bounds gRPC calls (beyond that
RESOURCE_EXHAUSTED, here with reason SERVER_BUSY and a RetryInfo, so HTTP clients get 429 with
Retry-After rather than grpcio's bare refusal); a call has a 30 s deadline in
`time_remaining()`; an exception that escapes the chain is UNKNOWN, its traceback logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import NoReturn

import grpc
from google.protobuf.message import Message

from luman.interceptors.base import Behavior
from luman.interceptors.client_address import parse_address
from luman.interceptors.error_mapping import status_for
from luman.interceptors.errors import OverloadedError
from luman.interceptors.token_auth import PEM_CERT_PROPERTY
from luman.server.gateway.routes import Route

logger = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str | bytes], ...]

DEFAULT_TIMEOUT_SECONDS = 30.0
BUSY_RETRY_SECONDS = 1


@dataclasses.dataclass(frozen=True)
class CallResult:
    code: grpc.StatusCode
    message: str  # status details text; "" on success
    response: Message | None
    metadata: Metadata  # initial then trailing metadata, as the call set them


def grpc_peer(ip: str) -> str:
    """`ip` written as grpcio writes a peer ("ipv4:1.2.3.4:0", "ipv6:[::1]:0"), so that the
    logging stage reads an HTTP client's address exactly as it reads a gRPC client's."""
    address = parse_address(ip)
    if address is None:
        return "unknown:"
    if isinstance(address, ipaddress.IPv6Address):
        return f"ipv6:[{address}]:0"
    return f"ipv4:{address}:0"


class _AbortError(Exception):
    """Raised by abort(), as grpcio raises after recording the status."""


class InProcessContext(grpc.ServicerContext):
    """The ServicerContext of one gateway call: what grpcio's own context offers the stages and
    servicers, with the same semantics (abort records the status and raises; the status and
    trailing metadata are read back once the behaviour returns)."""

    def __init__(
        self,
        metadata: Metadata,
        peer: str,
        timeout_seconds: float,
        client_certificate: bytes | None = None,
    ) -> None:
        self._metadata = metadata
        self._peer = peer
        # The HTTPS connection's verified client certificate (PEM), given where grpcio's
        # auth_context() gives a gRPC peer's: token authentication reads it from there.
        self._auth_context: dict[str, list[bytes]] = (
            {} if client_certificate is None else {PEM_CERT_PROPERTY: [client_certificate]}
        )
        self._deadline = time.monotonic() + timeout_seconds
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._initial: Metadata = ()
        self._trailing: Metadata = ()
        self._active = True
        self._callbacks: list[Callable[[], None]] | None = []
        self._lock = threading.Lock()

    # Read by the stages.
    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> Mapping[str, bytes]:
        # As grpcio gives it: each property a list of values (its stubs say bytes).
        return self._auth_context  # type: ignore[return-value]

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def is_active(self) -> bool:
        return self._active

    def cancel(self) -> None:
        """The HTTP client went away: the call is no longer active, its callbacks run."""
        self._finish()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self._lock:
            if self._callbacks is None:
                return False
            self._callbacks.append(callback)
            return True

    # Written by the stages.
    def send_initial_metadata(self, initial_metadata: Metadata) -> None:
        self._initial = tuple(initial_metadata)

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        if code == grpc.StatusCode.OK:  # as grpcio: an OK abort still fails the call
            code, details = grpc.StatusCode.UNKNOWN, ""
        self._code, self._details = code, details
        raise _AbortError

    def abort_with_status(self, status: grpc.Status) -> NoReturn:
        self._trailing = tuple(status.trailing_metadata or ())
        self.abort(status.code, status.details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_compression(self, compression: grpc.Compression) -> None:
        pass  # nothing is compressed in process

    def disable_next_message_compression(self) -> None:
        pass

    def run(self, behavior: Behavior, request: Message, method: str) -> CallResult:
        """Call `behavior` with this context and say how the call ended, as grpcio would send
        it: a status set by abort() or set_code() wins over a returned response."""
        response = None
        try:
            response = behavior(request, self)
        except _AbortError:
            pass
        except Exception:
            if self._code is None:  # grpcio answers an escaped exception with UNKNOWN
                logger.exception("exception calling %s", method)
                self._code, self._details = grpc.StatusCode.UNKNOWN, "Exception calling application"
        finally:
            self._finish()
        metadata = self._initial + self._trailing
        if self._code is not None and self._code != grpc.StatusCode.OK:
            return CallResult(self._code, self._details, None, metadata)
        if not isinstance(response, Message):
            logger.error("%s returned %r instead of a response message", method, type(response))
            return CallResult(grpc.StatusCode.INTERNAL, "internal error", None, metadata)
        return CallResult(grpc.StatusCode.OK, "", response, metadata)

    def _finish(self) -> None:
        with self._lock:
            callbacks, self._callbacks = self._callbacks, None
            self._active = False
        for callback in callbacks or ():
            try:
                callback()
            except Exception:
                logger.exception("call termination callback failed")


class InProcessCalls:
    """Calls routes' methods on `executor` (the gRPC server's worker pool, so HTTP and gRPC
    calls share one budget of threads), at most `max_concurrent` at a time.

    Args:
        behaviors: full method name -> its behaviour inside the interceptor chain.
    """

    def __init__(
        self,
        behaviors: Mapping[str, Behavior],
        executor: Executor,
        *,
        max_concurrent: int,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self._behaviors = dict(behaviors)
        self._executor = executor
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._timeout = timeout_seconds

    async def call(
        self,
        route: Route,
        request: Message,
        metadata: Metadata,
        peer: str,
        client_certificate: bytes | None = None,
    ) -> CallResult:
        """Make the call. Cancelling the awaiting task (the client went away, or the gateway
        stops without grace) cancels the call: its context is no longer active.

        `client_certificate`: the HTTPS client's verified certificate (PEM), if it sent one."""
        if not self._slots.acquire(blocking=False):
            return _busy(route.grpc_path)
        context = InProcessContext(metadata, peer, self._timeout, client_certificate)
        behavior = self._behaviors[route.grpc_path]
        try:
            future = self._executor.submit(context.run, behavior, request, route.grpc_path)
        except BaseException:
            self._slots.release()
            raise
        # Released when the call ends, or when it is cancelled before a thread took it.
        future.add_done_callback(lambda _: self._slots.release())
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            context.cancel()
            raise


def _busy(method: str) -> CallResult:
    """The answer when GRPC_MAX_CONCURRENT_RPCS gateway calls are already running: refused
    before the chain, as grpcio refuses gRPC calls past the same bound (no request-log row)."""
    error = OverloadedError(
        "SERVER_BUSY",
        "too many calls in progress; retry shortly",
        retry_after_seconds=BUSY_RETRY_SECONDS,
    )
    status = status_for(error, method)
    return CallResult(status.code, status.details, None, status.trailing_metadata)
