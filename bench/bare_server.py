"""The baseline: a bare grpcio server with one trivial unary handler.

It answers every unary method with the same pre-serialized bytes (the product's real GetMe
response, handed over in a file), so the message sizes on the wire match the product's. The
server model and options match `luman.server.app.build_server`: `grpc.server` on a
ThreadPoolExecutor with the same max_workers, the same channel options (the product's own
`server_options`, so the two cannot drift apart), the same maximum_concurrent_rpcs, and its
start-up heap frozen as `luman-server serve` freezes the product's.
`--aio` runs the same handler on `grpc.aio` instead, for the server-model comparison in
BENCHMARKS.md. `--floor` makes each call do, at grpcio's level, what every call to the product
must: parse a protobuf request and serialize a protobuf response (the same bytes), read the
peer address and the metadata, set three trailers, read the status code, and pass one
interceptor. No Luman code runs; `python -m bench.instructions` uses it to show how much of the
product's cost is grpcio's own. `--lean` adds to the floor the least Python any GetMe through
Luman's chain has to run on a token-cache hit, written as one function with nothing shared
but a lock (see `_lean_server`): a lower bound for the product's chain, not a design for it.

Run as `python -m bench.bare_server --response-file F`; it prints `READY <port>` on stdout once
it serves on 127.0.0.1, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import hashlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc

from luman.auth.v1 import auth_service_pb2
from luman.interceptors.rate_limit import DEFAULT_SLOTS
from luman.server.app import freeze_startup_heap, server_options, wait_for_stop
from luman.server.config import Settings
from luman.server.request_logs.writer import DEFAULT_MAX_QUEUE

READY = "READY"


# grpc-stubs makes the handler classes generic; grpcio's own classes cannot be subscripted.
if TYPE_CHECKING:
    _GenericRpcHandler = grpc.GenericRpcHandler[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:
    _GenericRpcHandler = grpc.GenericRpcHandler
    _Handler = grpc.RpcMethodHandler
    _ServerInterceptor = grpc.ServerInterceptor


class _AnyMethod(_GenericRpcHandler):
    """Serves every unary method with one handler (the baseline's: bytes in, bytes out)."""

    def __init__(self, handler: _Handler) -> None:
        self._handler = handler

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> _Handler:
        return self._handler


def _thread_pool_server(
    handler: _Handler, settings: Settings, interceptors: list[_ServerInterceptor] | None = None
) -> grpc.Server:
    """The product's server model and options, serving `handler` for every method."""
    return grpc.server(
        ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        handlers=[_AnyMethod(handler)],
        interceptors=interceptors,
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )


def _sync_server(response: bytes, settings: Settings) -> grpc.Server:
    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        return response

    return _thread_pool_server(grpc.unary_unary_rpc_method_handler(call), settings)


class _PassThrough(_ServerInterceptor):
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        return continuation(handler_call_details)


# The benchmark's rate limit (bench.scenarios.BENCH_RATE_LIMIT) and the product's default
# window: the floor's trailers carry values of the product's lengths, the lean chain counts.
_LIMIT = 10**9
_WINDOW_SECONDS = Settings.rate_limit_window_ms / 1000
_TRAILERS = (
    ("x-ratelimit-limit", str(_LIMIT)),
    ("x-ratelimit-remaining", str(_LIMIT - 1)),
    ("x-ratelimit-reset", str(int(_WINDOW_SECONDS))),
)


def _getme_server(
    call: Callable[[auth_service_pb2.GetMeRequest, grpc.ServicerContext], Any],
    settings: Settings,
) -> grpc.Server:
    """A server answering `call` with protobuf GetMe messages in and out, through one
    interceptor: the floor's and the lean chain's grpcio side, identical for both."""
    handler = grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=auth_service_pb2.GetMeRequest.FromString,
        response_serializer=auth_service_pb2.GetMeResponse.SerializeToString,
    )
    return _thread_pool_server(handler, settings, [_PassThrough()])


def _floor_server(response: bytes, settings: Settings) -> grpc.Server:
    message = auth_service_pb2.GetMeResponse.FromString(response)

    def call(
        request: auth_service_pb2.GetMeRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.GetMeResponse:
        context.peer()
        context.invocation_metadata()
        context.set_trailing_metadata(_TRAILERS)
        cast(Any, context).code()  # grpc-stubs predates code()
        return message

    return _getme_server(call, settings)


_LOG_QUEUE = DEFAULT_MAX_QUEUE


def _lean_server(response: bytes, settings: Settings) -> grpc.Server:
    """The floor plus what every GetMe through the product's chain must do in Python on a
    token-cache hit, with no layering at all: read the bearer token and user agent from the
    metadata, resolve the peer through a memo, hash the token (SHA-256) for the cache lookup
    and check its expiry against the wall clock, count the call in the caller's sliding
    window (one lock, one slot per 1/1000 of the window, as the product's limiter at a high
    limit), set the three trailers from that count, time the call and queue a request-log
    entry. Left out, so that this stays a lower bound: the database write of the entry (see
    the writer ceiling), error mapping, the ContextVars, and the token's one real check (a
    token is accepted when first seen; every later call is a hit, as in the product).
    """
    message = auth_service_pb2.GetMeResponse.FromString(response)
    tokens: dict[bytes, tuple[str, float]] = {}
    peers: dict[str, str] = {}
    windows: dict[str, collections.deque[list[float]]] = {}
    counts: dict[str, int] = {}
    lock = threading.Lock()
    log: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=_LOG_QUEUE)
    limit_header = ("x-ratelimit-limit", str(_LIMIT))
    quantum = _WINDOW_SECONDS / DEFAULT_SLOTS
    wall, timer, utc = time.time, time.perf_counter, dt.UTC

    def call(
        request: auth_service_pb2.GetMeRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.GetMeResponse:
        started, started_at = timer(), dt.datetime.now(utc)
        authorization = agent = ""
        for key, value in context.invocation_metadata():
            if isinstance(value, bytes):
                continue
            if key == "authorization":
                authorization = value
            elif key == "user-agent":
                agent = value
        peer = context.peer()
        ip = peers.get(peer)
        if ip is None:
            ip = peers.setdefault(peer, peer.rpartition(":")[0])
        digest = hashlib.sha256(authorization[7:].encode()).digest()
        cached = tokens.get(digest)
        if cached is None:
            cached = tokens.setdefault(digest, ("user:" + digest.hex()[:32], wall() + 3600))
        user, expires = cached
        if wall() >= expires:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "token expired")
        with lock:
            now = time.monotonic()
            entries = windows.get(user)
            if entries is None:
                entries = windows[user] = collections.deque()
                counts[user] = 0
            while entries and entries[0][0] + _WINDOW_SECONDS <= now:
                counts[user] -= int(entries.popleft()[2])
            slot = now // quantum
            if entries and entries[-1][1] == slot:
                entries[-1][0] = now
                entries[-1][2] += 1
            else:
                entries.append([now, slot, 1])
            counts[user] = count = counts[user] + 1
            reset = entries[0][0] + _WINDOW_SECONDS - now
        context.set_trailing_metadata(
            (
                limit_header,
                ("x-ratelimit-remaining", str(_LIMIT - count)),
                ("x-ratelimit-reset", str(max(0, math.ceil(reset - 0.0005)))),
            )
        )
        code = cast(Any, context).code()  # grpc-stubs predates code()
        log.append(
            (
                started_at,
                "/luman.auth.v1.AuthService/GetMe",
                "OK" if code is None else code.name,
                (timer() - started) * 1000,
                user,
                ip,
                agent,
            )
        )
        return message

    return _getme_server(call, settings)


def _announce(port: int) -> None:
    sys.stdout.write(f"{READY} {port}\n")
    sys.stdout.flush()


_SYNC_SERVERS: dict[str, Callable[[bytes, Settings], grpc.Server]] = {
    "bare": _sync_server,
    "floor": _floor_server,
    "lean": _lean_server,
}


def _serve_sync(response: bytes, settings: Settings, *, kind: str = "bare") -> None:
    server = _SYNC_SERVERS[kind](response, settings)
    port = server.add_insecure_port("127.0.0.1:0")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    freeze_startup_heap()  # as the product does
    server.start()
    _announce(port)
    wait_for_stop(stop)
    server.stop(None).wait()


async def _serve_aio(response: bytes, settings: Settings) -> None:
    async def call(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return response

    server = grpc.aio.server(
        handlers=[_AnyMethod(grpc.unary_unary_rpc_method_handler(call))],
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    freeze_startup_heap()
    await server.start()
    _announce(port)
    await stop.wait()
    await server.stop(None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server")
    parser.add_argument("--response-file", type=Path, required=True)
    parser.add_argument("--aio", action="store_true", help="grpc.aio instead of the thread pool")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--floor", action="store_true", help="do grpcio's part of a product call (see above)"
    )
    kind.add_argument(
        "--lean", action="store_true", help="the floor plus the least chain work (see above)"
    )
    parser.add_argument("--max-workers", type=int, default=Settings.max_workers)
    parser.add_argument("--max-concurrent-rpcs", type=int, default=Settings.max_concurrent_rpcs)
    args = parser.parse_args(argv)
    settings = Settings(max_workers=args.max_workers, max_concurrent_rpcs=args.max_concurrent_rpcs)
    response = args.response_file.read_bytes()
    if args.aio:
        asyncio.run(_serve_aio(response, settings))
    else:
        _serve_sync(
            response, settings, kind="lean" if args.lean else "floor" if args.floor else "bare"
        )


if __name__ == "__main__":
    main()
