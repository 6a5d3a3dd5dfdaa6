"""Racing calls through the real server: threads released by one barrier, so that the calls
really overlap, and their outcomes as (status code name, ErrorInfo reason)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from tests.support import rich_error

Outcome = tuple[str, str]  # (status code name, ErrorInfo reason)
OK: Outcome = ("OK", "")
PAIRS = 8  # organizations raced at once: more overlapping pairs, more chances to interleave


def race(calls: list[Callable[[], Any]]) -> list[Outcome]:
    """Run `calls` at once; return each one's outcome, in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Outcome:
        barrier.wait()
        try:
            call()
        except grpc.RpcError as exc:
            error = rich_error(exc)
            return error.code.name, error.reason
        return OK

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def tally(results: list[Outcome]) -> dict[Outcome, int]:
    return dict(collections.Counter(results))
