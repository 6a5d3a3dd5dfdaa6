"""The baseline: a bare grpcio server with one trivial unary handler.

It answers every unary method with the same pre-serialized bytes (the product's real GetMe
response, handed over in a file), so the message sizes on the wire match the product's. The
server model and options match `luman.server.app.build_server`: `grpc.server` on a
ThreadPoolExecutor with the same max_workers, the same channel options (the product's own
`server_options`, so the two cannot drift apart) and the same maximum_concurrent_rpcs.

Run as `python -m bench.bare_server --response-file F`; it prints `READY <port>` on stdout once
it serves on 127.0.0.1, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from luman.server.app import server_options, wait_for_stop
from luman.server.config import Settings

READY = "READY"


# grpc-stubs makes the handler classes generic; grpcio's own classes cannot be subscripted.
if TYPE_CHECKING:
    _GenericRpcHandler = grpc.GenericRpcHandler[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _GenericRpcHandler = grpc.GenericRpcHandler
    _Handler = grpc.RpcMethodHandler


class _AnyMethod(_GenericRpcHandler):
    """Serves every unary method with one handler: bytes in, the same bytes out."""

    def __init__(self, handler: _Handler) -> None:
        self._handler = handler

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> _Handler:
        return self._handler


def bare_server(response: bytes, settings: Settings) -> grpc.Server:
    """The product's server model and options, answering every call with `response`."""

    def call(request: bytes, context: grpc.ServicerContext) -> bytes:
        return response

    return grpc.server(
        ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        handlers=[_AnyMethod(grpc.unary_unary_rpc_method_handler(call))],
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_server")
    parser.add_argument("--response-file", type=Path, required=True)
    parser.add_argument("--max-workers", type=int, default=Settings.max_workers)
    parser.add_argument("--max-concurrent-rpcs", type=int, default=Settings.max_concurrent_rpcs)
    args = parser.parse_args(argv)
    settings = Settings(max_workers=args.max_workers, max_concurrent_rpcs=args.max_concurrent_rpcs)
    server = bare_server(args.response_file.read_bytes(), settings)
    port = server.add_insecure_port("127.0.0.1:0")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    sys.stdout.write(f"{READY} {port}\n")
    sys.stdout.flush()
    wait_for_stop(stop)
    server.stop(None).wait()


if __name__ == "__main__":
    main()
