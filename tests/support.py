"""Test helpers shared across the suite: a settable clock, rich-error decoding, sign-up."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.auth.passwords import PasswordHasher

PASSWORD = "correct horse battery"


class FakeClock:
    """A clock the test moves by hand: `clock()` for now, `clock.advance(seconds=...)`."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> None:
        with self._lock:
            self._now += dt.timedelta(**delta)


@dataclasses.dataclass(frozen=True)
class RichError:
    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    field_violations: dict[str, str]
    retry_delay_seconds: float | None


def rich_error(exc: grpc.RpcError) -> RichError:
    """Decode the google.rpc.Status details the server attaches to every error."""
    assert isinstance(exc, grpc.Call)
    status = rpc_status.from_call(exc)
    reason = domain = ""
    violations: dict[str, str] = {}
    retry: float | None = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain = info.reason, info.domain
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = {v.field: v.description for v in bad.field_violations}
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info_retry = error_details_pb2.RetryInfo()
                detail.Unpack(info_retry)
                retry = info_retry.retry_delay.ToTimedelta().total_seconds()
    return RichError(exc.code(), exc.details() or "", reason, domain, violations, retry)


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def get_me(
    auth: auth_service_pb2_grpc.AuthServiceStub, token: str
) -> auth_service_pb2.GetMeResponse:
    response: auth_service_pb2.GetMeResponse = auth.GetMe(
        auth_service_pb2.GetMeRequest(), metadata=bearer(token)
    )
    return response


def refused_reason(auth: auth_service_pb2_grpc.AuthServiceStub, token: str) -> str:
    """The ErrorInfo reason of a GetMe with `token` that must fail as UNAUTHENTICATED."""
    try:
        get_me(auth, token)
    except grpc.RpcError as exc:
        error = rich_error(exc)
        assert error.code == grpc.StatusCode.UNAUTHENTICATED, error
        return error.reason
    raise AssertionError("GetMe succeeded")


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def register(
    auth: auth_service_pb2_grpc.AuthServiceStub,
    email: str | None = None,
    name: str = "Test User",
    password: str = PASSWORD,
) -> auth_service_pb2.RegisterResponse:
    response: auth_service_pb2.RegisterResponse = auth.Register(
        auth_service_pb2.RegisterRequest(
            email=email or unique_email(), password=password, name=name
        )
    )
    return response


class HookedHasher(PasswordHasher):
    """A real PasswordHasher that calls `on_bcrypt()` just before each bcrypt hash or check,
    on the thread that runs it, with the caller's hash slot held."""

    def on_bcrypt(self) -> None:
        """Override: what the test needs to see or do at that moment."""

    def _hash(self, password: bytes) -> bytes:
        self.on_bcrypt()
        return super()._hash(password)

    def _check(self, password: bytes, password_hash: bytes) -> bool:
        self.on_bcrypt()
        return super()._check(password, password_hash)


class GatedHasher(HookedHasher):
    """Each bcrypt check or hash, once it holds a slot, waits until `gate` opens; `inside` is
    released once per caller holding a slot."""

    WAIT = 10.0  # seconds: only a broken test waits this long for the gate

    def __init__(self, rounds: int, **bounds: int) -> None:
        super().__init__(rounds, **bounds)
        self.gate = threading.Event()
        self.gate.set()
        self.inside = threading.Semaphore(0)

    def on_bcrypt(self) -> None:
        self.inside.release()
        assert self.gate.wait(self.WAIT), "the test never opened the gate"
