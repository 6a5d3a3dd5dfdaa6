"""Reading a request body from ASGI, bounded: the JSON routes and the /device page alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class ClientGoneError(Exception):
    """The client disconnected while its body was read."""


class BodyTooLargeError(Exception):
    """The body (declared or received) is larger than the limit; nothing more is read."""


async def read_body(receive: Receive, content_length: str | None, limit: int) -> bytes:
    """The whole body, at most `limit` bytes. A Content-Length above the limit is refused
    before any of the body is read.

    Raises:
        BodyTooLargeError: the body is larger than `limit`.
        ClientGoneError: the client disconnected first.
    """
    declared = (content_length or "").strip()
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise ClientGoneError
        chunk: bytes = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
        if not event.get("more_body", False):
            return b"".join(chunks)
