"""MethodInterceptor: the base of every server interceptor here.

grpcio asks each interceptor for the method's handler on every call, on the server's one
polling thread. grpc-interceptor's ServerInterceptor answers by building new closures and a new
RpcMethodHandler each time. A MethodInterceptor instead wraps a method's behaviour once, the
first time the method is called, and hands the same wrapped handler back afterwards: a call
then costs one dict lookup here and one Python frame per interceptor that applies to the method.
An interceptor that has nothing to do for a method (health checks are never rate limited, public
methods need no token) returns the behaviour unchanged and costs that method nothing per call.

The cache is keyed by the full method name and holds the next handler it wrapped: grpcio's
servicer handlers are created once per method, so a different handler object means something
upstream builds handlers per call, and that call is wrapped afresh (correct, only slower).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

# (request or request iterator, context) -> response or response iterator: every arity of
# grpcio handler behaviour takes and returns these two shapes.
Behavior = Callable[[Any, grpc.ServicerContext], Any]

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


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """What an interceptor may know about a method when it wraps it."""

    name: str  # "/package.Service/Method"
    request_streaming: bool
    response_streaming: bool


class MethodInterceptor(_ServerInterceptor):
    """A server interceptor defined by `wrap`, called once per method."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[_Handler, _Handler]] = {}

    @abc.abstractmethod
    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        """The behaviour to run for `method` instead of `behavior`, which it should call.

        Return `behavior` itself to stay out of the method altogether. For a response-streaming
        method both return an iterator of responses, and the work that happens while grpcio
        iterates it happens after the wrapper has returned.
        """

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
        wrapped = wrap_handler(self, name, handler)
        if name in self._handlers or len(self._handlers) < MAX_CACHED_METHODS:
            self._handlers[name] = (handler, wrapped)
        return wrapped


_FACTORIES: dict[tuple[bool, bool], tuple[str, Callable[..., _Handler]]] = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def wrap_handler(interceptor: MethodInterceptor, name: str, handler: _Handler) -> _Handler:
    """`handler` with its behaviour wrapped by `interceptor` (or `handler` itself, unchanged)."""
    method = MethodInfo(name, bool(handler.request_streaming), bool(handler.response_streaming))
    attribute, factory = _FACTORIES[method.request_streaming, method.response_streaming]
    behavior = getattr(handler, attribute)
    wrapped = interceptor.wrap(method, behavior)
    if wrapped is behavior:
        return handler
    return factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
