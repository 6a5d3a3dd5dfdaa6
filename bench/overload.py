"""A sign-in flood from callers that retry at once: the overload scenario (issue 14).

`callers` concurrent callers each loop one sign-in against 127.0.0.1 (Login with one account's
password, or Register with a fresh email on every attempt) and retry immediately on any answer
but OK, as a careless client or an attacker does, for `warmup + duration` seconds. Counted
over the last `duration` seconds: successes, refusals by status code and by ErrorInfo reason,
and each success's latency from the first attempt of that sign-in to its success (what the
person signing in waits, retries included).

One grpc.aio channel on one event loop, so the client itself costs little CPU (run it on the
other core than the server, as h2load). When the time is up, the calls still in flight are
cancelled (the server sees the cancellation) and the run returns: it stops by itself.

Examples:
    python -m bench.overload --port 3000 --method login --callers 64 --duration 10
    python -m bench.overload --port 3000 --method register --callers 16 --json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import cast

import grpc
from google.rpc import error_details_pb2, status_pb2

from bench.stats import percentile
from luman.auth.v1 import auth_service_pb2

_SERVICE = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
LOGIN = f"/{_SERVICE}/Login"
REGISTER = f"/{_SERVICE}/Register"

METHODS = ("login", "register")
PASSWORD = "overload password 1234"  # noqa: S105 - a throwaway account in a throwaway database
DEFAULT_TIMEOUT_SECONDS = 30.0  # each attempt's gRPC deadline
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# A run ends this long after its time is up even if a cancelled call never reports back.
STOP_SLACK_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class OverloadResult:
    """What one run counted in its measured window (`seconds` long, after the warm-up).

    `refusals` is keyed by status code name (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ...),
    `reasons` by "CODE REASON" with the google.rpc.ErrorInfo reason the server attached ("CODE"
    alone when it attached none). `latency_ms` holds each success's latency, first attempt
    to success, in completion order.
    """

    method: str
    callers: int
    seconds: float
    successes: int
    refusals: dict[str, int]
    reasons: dict[str, int]
    attempts: int  # every answered call in the window, successes included
    latency_ms: tuple[float, ...]

    @property
    def per_second(self) -> float:
        """Successful sign-ins per second: the goodput."""
        return self.successes / self.seconds if self.seconds > 0 else 0.0

    @property
    def refused(self) -> int:
        return sum(self.refusals.values())

    @property
    def refusals_per_second(self) -> float:
        return self.refused / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50_ms(self) -> float | None:
        return percentile(sorted(self.latency_ms), 50) if self.latency_ms else None

    @property
    def p99_ms(self) -> float | None:
        return percentile(sorted(self.latency_ms), 99) if self.latency_ms else None

    def summary(self) -> dict[str, object]:
        """The figures as plain JSON-ready values (latencies as p50/p99 only)."""
        return {
            "method": self.method,
            "callers": self.callers,
            "seconds": round(self.seconds, 3),
            "successes": self.successes,
            "per_second": round(self.per_second, 2),
            "refused": self.refused,
            "refusals_per_second": round(self.refusals_per_second, 1),
            "refusals": dict(self.refusals),
            "reasons": dict(self.reasons),
            "attempts": self.attempts,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }


def run(
    port: int,
    method: str,
    callers: int,
    duration: float,
    *,
    warmup: float = 0.0,
    email: str | None = None,
    password: str = PASSWORD,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> OverloadResult:
    """Flood the server at 127.0.0.1:`port` with `callers` retrying callers of `method`.

    Args:
        port: the server's port on 127.0.0.1 (the only address this client calls).
        method: "login" or "register".
        callers: concurrent callers, each with at most one call in flight.
        duration: seconds counted, after `warmup` seconds that are not. A server that queues
            sign-ins reaches its steady latency after one turn of its queue (about `callers`
            divided by sign-ins per second); a shorter run only sees the early, shorter waits.
        email: for login, the account to sign in to (with `password`); None registers a
            fresh one first.
        timeout: each attempt's deadline, in seconds.

    Raises:
        ValueError: an unknown method or a non-positive count or duration.
        grpc.aio.AioRpcError: the account for login could not be registered.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if callers < 1 or duration <= 0 or warmup < 0 or timeout <= 0:
        raise ValueError("callers, duration and timeout must be positive, warmup at least 0")
    flood = _Flood(port, method, callers, password, timeout)
    return asyncio.run(flood.run(email, warmup, duration))


class _Flood:
    def __init__(self, port: int, method: str, callers: int, password: str, timeout: float) -> None:
        self.port = port
        self.method = method
        self.callers = callers
        self.password = password
        self.timeout = timeout
        self.run_id = secrets.token_hex(4)  # fresh emails, also across runs on one database
        self.start = self.end = 0.0
        self.refusals: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.attempts = 0
        self.latency_ms: list[float] = []

    async def run(self, email: str | None, warmup: float, duration: float) -> OverloadResult:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            calls = _Calls(channel)
            await asyncio.wait_for(channel.channel_ready(), self.timeout)
            if self.method == "login" and email is None:
                email = f"overload-{self.run_id}@example.com"
                await calls.register(
                    auth_service_pb2.RegisterRequest(
                        email=email, password=self.password, name="Overload"
                    ),
                    timeout=self.timeout,
                )
            began = time.perf_counter()
            self.start = began + warmup
            self.end = self.start + duration
            tasks = [
                asyncio.create_task(self._caller(n, self._attempt(calls, n, email)))
                for n in range(self.callers)
            ]
            await asyncio.sleep(max(0.0, self.end - time.perf_counter()))
            for task in tasks:
                task.cancel()  # cancels the call in flight: the server sees it go
            await asyncio.wait(tasks, timeout=STOP_SLACK_SECONDS)
        return OverloadResult(
            method=self.method,
            callers=self.callers,
            seconds=duration,
            successes=len(self.latency_ms),
            refusals=dict(self.refusals),
            reasons=dict(self.reasons),
            attempts=self.attempts,
            latency_ms=tuple(self.latency_ms),
        )

    def _attempt(
        self, calls: _Calls, caller: int, email: str | None
    ) -> Callable[[], Awaitable[object]]:
        """One sign-in attempt of `caller`: the call to make, each time it is made."""
        if self.method == "login":
            login = auth_service_pb2.LoginRequest(email=email or "", password=self.password)
            return lambda: calls.login(login, timeout=self.timeout)
        count = 0

        def register() -> Awaitable[object]:
            nonlocal count
            count += 1
            request = auth_service_pb2.RegisterRequest(
                email=f"overload-{self.run_id}-{caller}-{count}@example.com",
                password=self.password,
                name="Overload",
            )
            return calls.register(request, timeout=self.timeout)

        return register

    async def _caller(self, caller: int, attempt: Callable[[], Awaitable[object]]) -> None:
        del caller  # the attempt already knows whose it is
        while True:
            first = time.perf_counter()
            while True:
                try:
                    await attempt()
                except grpc.aio.AioRpcError as exc:
                    if self._counted(time.perf_counter()):
                        self.attempts += 1
                        code = exc.code().name
                        self.refusals[code] += 1
                        reason = _reason(exc)
                        self.reasons[f"{code} {reason}" if reason else code] += 1
                    continue  # at once: the client this scenario is about does not wait
                break
            done = time.perf_counter()
            if self._counted(done):
                self.attempts += 1
                self.latency_ms.append((done - first) * 1000)

    def _counted(self, now: float) -> bool:
        return self.start <= now < self.end


class _Calls:
    """The two sign-in calls on a grpc.aio channel (the generated stub is typed for the
    synchronous API only)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.login = channel.unary_unary(
            LOGIN,
            request_serializer=auth_service_pb2.LoginRequest.SerializeToString,
            response_deserializer=auth_service_pb2.LoginResponse.FromString,
        )
        self.register = channel.unary_unary(
            REGISTER,
            request_serializer=auth_service_pb2.RegisterRequest.SerializeToString,
            response_deserializer=auth_service_pb2.RegisterResponse.FromString,
        )


def _reason(exc: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason in the error's status details, "" when there is none."""
    # grpc-stubs types it as the synchronous API's; it is an aio Metadata of (key, value) pairs.
    pairs = cast("Iterable[tuple[str, str | bytes]]", exc.trailing_metadata() or ())
    for key, value in pairs:
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return str(info.reason)
    return ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overload",
        description="Sign-in flood from callers that retry at once, against 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, required=True, help="the server's port on 127.0.0.1")
    parser.add_argument("--method", choices=METHODS, default="login")
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds counted")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before counting")
    parser.add_argument("--email", help="login: an existing account (default: register one)")
    parser.add_argument("--password", default=PASSWORD)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(
        args.port,
        args.method,
        args.callers,
        args.duration,
        warmup=args.warmup,
        email=args.email,
        password=args.password,
        timeout=args.timeout,
    )
    summary = result.summary()
    if args.json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    p50, p99 = summary["p50_ms"], summary["p99_ms"]
    sys.stdout.write(
        f"{result.method} x {result.callers} callers, {result.seconds:g} s: "
        f"{result.successes} ok ({result.per_second:.2f}/s), "
        f"{result.refused} refused ({result.refusals_per_second:.0f}/s) {summary['reasons']}, "
        f"latency p50 {_ms(p50)} p99 {_ms(p99)}\n"
    )


def _ms(value: object) -> str:
    return f"{value:.0f} ms" if isinstance(value, float) else "-"


if __name__ == "__main__":
    main()
