"""InterceptorChain: several MethodInterceptors installed as one.

grpcio runs each installed interceptor's `intercept_service` on every call, nested through a
fresh continuation closure per interceptor. The chain is one interceptor instead: per method it
asks each stage to wrap the behaviour once (innermost last in the list first) and caches the
result, so a call costs one lookup plus one frame per stage that applies to the method. The
stages are ordinary interceptors and work on their own as well; their order is the list order,
outermost first, exactly as if they had been passed to `grpc.server(interceptors=...)`.
"""

from __future__ import annotations

from collections.abc import Sequence

from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor


class InterceptorChain(MethodInterceptor):
    def __init__(self, stages: Sequence[MethodInterceptor]) -> None:
        super().__init__()
        self.stages = tuple(stages)

    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        for stage in reversed(self.stages):
            behavior = stage.wrap(method, behavior)
        return behavior
