"""LOG_FORMAT=json: one JSON object per line (server/luman/server/log_format.py), and no secret
in the process log even at DEBUG, through `luman-server serve` itself."""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors import call_context
from luman.interceptors.call_context import CallRecord
from luman.interceptors.client_address import Caller
from luman.organization.v1 import organization_service_pb2, organization_service_pb2_grpc
from luman.server.log_format import JsonFormatter
from tests.mail_support import Mailbox, code_of
from tests.serve_process import free_port, serve_env, serving
from tests.server import device_login_support as device
from tests.support import PASSWORD, bearer, unique_email

KEYS = {"time", "level", "logger", "message"}
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
# The shapes of our secrets: personal (CLI) tokens, device codes, service-account secrets, and
# JWTs (a base64url JSON header starts "eyJ").
SECRET_SHAPES = re.compile(r"lm[nds]_[A-Za-z0-9_-]{6,}|eyJ[A-Za-z0-9_-]{10,}")
WRONG_PASSWORD = "not the password at all"
NEW_PASSWORD = "a brand new passphrase"
REQUEST_ID = "req-json-logs-0001"
GENEROUS = "1000000"
# joserfc warns that RFC 9864 deprecates the "EdDSA" name; see tests/gateway/test_gateway_jwks.py.
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")


def _lines(stderr: str) -> list[dict[str, Any]]:
    parsed = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)  # every line: a log line is JSON or the test fails here
        assert isinstance(entry, dict), line
        assert entry.keys() >= KEYS, line
        assert RFC3339_UTC.match(entry["time"]), line
        parsed.append(entry)
    return parsed


@pytest.fixture
def json_server(
    tmp_path: Path, database_url: str, mailbox: Mailbox
) -> Iterator[tuple[grpc.Channel, subprocess.Popen[str]]]:
    """`luman-server serve` with LOG_FORMAT=json at DEBUG, its mail to the test's SMTP server
    (without SMTP_URL, development mail goes to the log by design)."""
    port = free_port()
    env = serve_env(
        tmp_path,
        database_url,
        port,
        LOG_FORMAT="json",
        LOG_LEVEL="DEBUG",
        SMTP_URL=mailbox.url,
        BCRYPT_ROUNDS="4",
        AUTH_RATE_LIMIT_MAX_REQUESTS=GENEROUS,
        EMAIL_RATE_LIMIT_MAX_REQUESTS=GENEROUS,
        SERVICE_TOKEN_RATE_LIMIT_MAX_REQUESTS=GENEROUS,
        DEVICE_START_RATE_LIMIT_MAX_REQUESTS=GENEROUS,
        DEVICE_POLL_RATE_LIMIT_MAX_REQUESTS=GENEROUS,
        INTROSPECTION_ORGANIZATIONS="*",  # a service account needs a scope: introspect
    )
    with (
        serving(tmp_path, env) as process,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            process.kill()
            _, stderr = process.communicate()
            raise AssertionError(f"the server did not start: {stderr}") from None
        yield channel, process


def test_json_logs_hold_no_secret_at_debug(
    json_server: tuple[grpc.Channel, subprocess.Popen[str]], mailbox: Mailbox
) -> None:
    channel, process = json_server
    auth = auth_service_pb2_grpc.AuthServiceStub(channel)
    orgs = organization_service_pb2_grpc.OrganizationServiceStub(channel)
    tagged = (("x-request-id", REQUEST_ID),)
    email = unique_email("jsonlogs")
    secrets: list[str] = [PASSWORD, WRONG_PASSWORD, NEW_PASSWORD]

    registered = auth.Register(
        auth_service_pb2.RegisterRequest(email=email, password=PASSWORD, name="Json Logs"),
        metadata=tagged,
    )
    access = registered.tokens.access_token
    secrets += [access, registered.tokens.refresh_token]
    verification = code_of(mailbox.wait_for(email, "verify"))
    secrets.append(verification)
    auth.VerifyEmail(
        auth_service_pb2.VerifyEmailRequest(email=email, code=verification), metadata=tagged
    )

    with pytest.raises(grpc.RpcError) as refused:
        auth.Login(
            auth_service_pb2.LoginRequest(email=email, password=WRONG_PASSWORD), metadata=tagged
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    signed_in = auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))
    secrets += [signed_in.tokens.access_token, signed_in.tokens.refresh_token]

    # CLI tokens: by password, and created with an access token.
    cli = auth.CliLogin(
        auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD, token_name="laptop"),
        metadata=tagged,
    )
    created = auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="ci"), metadata=bearer(access) + tagged
    )
    secrets += [cli.token, created.token]
    assert cli.token.startswith("lmn_")
    assert created.token.startswith("lmn_")

    # Device login: start, approve with the user code, poll for the personal token.
    started = device.start(auth, metadata=tagged)
    secrets += [started.device_code, started.user_code]
    assert started.device_code.startswith("lmd_")
    device.approve(auth, access, started.user_code, metadata=tagged)
    polled = device.poll(auth, started.device_code, metadata=tagged)
    secrets.append(polled.access_token)

    # Password reset: request, then reset with the emailed code.
    auth.RequestPasswordReset(
        auth_service_pb2.RequestPasswordResetRequest(email=email), metadata=tagged
    )
    reset_code = code_of(mailbox.wait_for(email, "reset"))
    secrets.append(reset_code)
    auth.ResetPassword(
        auth_service_pb2.ResetPasswordRequest(
            email=email, code=reset_code, new_password=NEW_PASSWORD
        ),
        metadata=tagged,
    )

    # A service account's secret, and the token it buys.
    signed_in = auth.Login(auth_service_pb2.LoginRequest(email=email, password=NEW_PASSWORD))
    owner = bearer(signed_in.tokens.access_token)
    secrets += [signed_in.tokens.access_token, signed_in.tokens.refresh_token]
    organization = orgs.CreateOrganization(
        organization_service_pb2.CreateOrganizationRequest(
            name="Json Logs", slug=f"jsonlogs-{email[9:19]}"
        ),
        metadata=owner,
    ).organization
    account = orgs.CreateServiceAccount(
        organization_service_pb2.CreateServiceAccountRequest(
            slug=organization.slug, name="billing", scopes=["introspect"]
        ),
        metadata=owner,
    )
    assert account.secret.startswith("lms_")
    service = auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=account.secret), metadata=tagged
    )
    secrets += [account.secret, service.access_token]

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr

    entries = _lines(stderr)
    # DEBUG reached the output (the per-call lines), so there was something to leak.
    assert any(e["level"] == "DEBUG" and e["message"].startswith("rpc ") for e in entries)
    assert any(e["message"].startswith("stopped") for e in entries)
    assert all(secrets)
    for secret in secrets:
        assert secret not in stderr, f"a secret is in the log: {secret[:6]}…"
    assert not SECRET_SHAPES.search(stderr), SECRET_SHAPES.search(stderr)
    for entry in entries:
        assert set(entry) <= KEYS | {"request_id", "trace_id", "exception", "stack"}, entry
        if "request_id" in entry:
            assert entry["request_id"] == REQUEST_ID, entry
    # The call that sent an x-request-id has its per-call line tagged with it.
    assert any(
        e.get("request_id") == REQUEST_ID and e["message"].startswith("rpc ") for e in entries
    )


def _format(record: logging.LogRecord) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(JsonFormatter().format(record))
    return entry


def _record(message: str, *args: object, **fields: Any) -> logging.LogRecord:
    return logging.LogRecord("luman.test", logging.INFO, __file__, 1, message, args, None, **fields)


def test_json_line_has_the_call_request_id_only_while_serving_it() -> None:
    record = _record("hello %s", "world")
    outside = _format(record)
    assert outside.keys() == KEYS
    assert outside["message"] == "hello world"
    assert outside["level"] == "INFO"
    assert outside["logger"] == "luman.test"

    token = call_context.enter(CallRecord(Caller("192.0.2.1", "test"), request_id="abc-123"))
    try:
        assert _format(record)["request_id"] == "abc-123"
        # A request id is the client's text: one that is not a short printable ASCII string
        # is left out rather than copied into the log.
        call_context.optional_call().request_id = "x" * 65  # type: ignore[union-attr]
        assert "request_id" not in _format(record)
    finally:
        call_context.leave(token)
    assert "request_id" not in _format(record)


def test_json_line_has_a_trace_id_only_when_known() -> None:
    record = _record("traced")
    assert "trace_id" not in _format(record)
    record.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert _format(record)["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_json_exception_is_one_string_on_the_same_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("luman.test.json_exception")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("failed with %d", 42)
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["message"] == "failed with 42"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: boom\nsecond line" in entry["exception"]
