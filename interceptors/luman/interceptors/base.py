"""MethodInterceptor: one stage of the server's interceptor chain.

A stage is defined by `wrap(method, behavior)`: given what a method does, it returns what the
method should do with the stage around it. InterceptorChain (chain.py) asks every stage once
per method and installs the result as one grpc.ServerInterceptor.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any

import grpc

# (request or request iterator, context) -> response or response iterator: every arity of
# grpcio handler behaviour takes and returns these two shapes.
Behavior = Callable[[Any, grpc.ServicerContext], Any]


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """What a stage may know about a method when it wraps it."""

    name: str  # "/package.Service/Method"
    request_streaming: bool
    response_streaming: bool


class MethodInterceptor(abc.ABC):
    """A stage of the chain."""

    @abc.abstractmethod
    def wrap(self, method: MethodInfo, behavior: Behavior) -> Behavior:
        """The behaviour to run for `method` instead of `behavior`, which it should call.

        Return `behavior` itself to stay out of the method altogether. For a response-streaming
        method both return an iterator of responses, and the work that happens while grpcio
        iterates it happens after the wrapper has returned.
        """
