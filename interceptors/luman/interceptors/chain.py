"""InterceptorChain: the server's stages installed as one grpc.ServerInterceptor.

grpcio asks the installed interceptor for a method's handler on every call. The chain wraps a
method's behaviour in all its stages the first time the method is called (the last stage
innermost, so the list reads outermost first, as `grpc.server(interceptors=...)` would run
them) and hands the same handler back afterwards: a call then costs a dict lookup plus one
frame per stage that applies to the method. Building the wrappers on every call instead cost
GetMe 15 % at 16 streams (0.50 against 0.59 x bare; BENCHMARKS.md, "What the chain costs").

Innermost, below every stage, the chain refuses requests that did not decode (malformed.py),
so that they cross the stages, the log and the rate limiter like any other call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from luman.interceptors import malformed
from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor

# A generic handler may answer any method name a client sends (grpcio's own ones do not), so
# the cache is bounded; past this, calls to further methods are wrapped per call.
MAX_CACHED_METHODS = 1024

# grpc-stubs makes these generic; grpcio's own classes cannot be subscripted.
if TYPE_CHECKING:
    _Handler = grpc.RpcMethodHandler[Any, Any]
    _ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:
    _Handler = grpc.RpcMethodHandler
    _ServerInterceptor = grpc.ServerInterceptor

_FACTORIES: dict[tuple[bool, bool], tuple[str, Callable[..., _Handler]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


class InterceptorChain(_ServerInterceptor):
    """Runs `stages` around every method, the first one outermost."""

    def __init__(self, stages: Sequence[MethodInterceptor]) -> None:
        self.stages = tuple(stages)
        # method name -> (the servicer's handler, the wrapped one). grpcio's servicer handlers
        # are created once per method, so a different handler object means something upstream
        # builds handlers per call, and that call is wrapped afresh (correct, only slower).
        self._handlers: dict[str, tuple[_Handler, _Handler]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], _Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:  # no such method: grpcio answers UNIMPLEMENTED
            return None
        name: str = handler_call_details.method
        cached = self._handlers.get(name)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap_handler(name, handler)
        if name in self._handlers or len(self._handlers) < MAX_CACHED_METHODS:
            self._handlers[name] = (handler, wrapped)
        return wrapped

    def wrap_handler(self, name: str, handler: _Handler) -> _Handler:
        """`handler` with its behaviour inside every stage and undecodable requests refused."""
        method = MethodInfo(name, bool(handler.request_streaming), bool(handler.response_streaming))
        attribute, factory = _FACTORIES[method.request_streaming, method.response_streaming]
        return factory(
            self.wrap(method, getattr(handler, attribute)),
            request_deserializer=malformed.tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        """`behavior` inside every stage, the first outermost. The HTTP gateway calls methods
        this way, in process, with requests it has decoded itself."""
        behavior = malformed.refuse_malformed(method, behavior)
        for stage in reversed(self.stages):
            behavior = stage.wrap(method, behavior)
        return behavior
