"""A real OpenID Connect provider on a free loopback port: panva's certified `oidc-provider`
(npm), run by Node from tests/federation/oidc_provider/server.mjs.

    with running_oidc_provider([OidcClient("luman", "secret", [redirect_uri])]) as provider:
        provider.issuer          # "http://127.0.0.1:<port>"; discovery under /.well-known/...
        provider.tamper("signature")   # the token endpoint's id_token no longer verifies
        provider.tamper(None)
        provider.set_down(True)  # every endpoint answers 503

Any login name signs in with any password; server.mjs's header lists the accounts' claims, the
page selectors and the test controls. `make install` installs its node_modules: without them
the test skips, or fails under CI=true.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import httpx
import pytest

PROVIDER_DIR = Path(__file__).resolve().with_name("oidc_provider")
START_TIMEOUT = 20.0  # seconds for Node to print its {"issuer": ..., "port": ...} line
STOP_TIMEOUT = 5.0
CONTROL_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class OidcClient:
    """A registered relying party. PKCE (S256) is required whatever the auth method."""

    client_id: str
    client_secret: str
    redirect_uris: Sequence[str]
    token_endpoint_auth_method: str = "client_secret_basic"  # or "client_secret_post"

    def to_json(self) -> dict[str, object]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": list(self.redirect_uris),
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
        }


@dataclasses.dataclass(frozen=True)
class OidcProvider:
    """The running provider: its issuer and its test controls."""

    issuer: str
    port: int

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def tamper(self, mode: str | None) -> None:
        """Alter the id_token of every token response from now on: "signature" (flip a
        character of the signature) or "none" (unsigned, alg "none"); None stops."""
        self._control("tamper", {"mode": mode})

    def set_down(self, down: bool) -> None:
        """While down, every endpoint (discovery, authorize, token, JWKS) answers 503."""
        self._control("down", {"down": down})

    def _control(self, name: str, body: dict[str, object]) -> None:
        with httpx.Client(trust_env=False, timeout=CONTROL_TIMEOUT) as http:
            http.post(f"{self.issuer}/__test/{name}", json=body).raise_for_status()


def _require_node_modules() -> str:
    node = shutil.which("node")
    if node is not None and (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return node
    missing = "node" if node is None else f"{PROVIDER_DIR / 'node_modules'}"
    message = f"the test OpenID provider needs {missing}: run make install"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def _read_ready_line(process: subprocess.Popen[bytes], log: IO[bytes]) -> dict[str, object]:
    """The {"issuer": ..., "port": ...} line, within START_TIMEOUT."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + START_TIMEOUT
    buffered = b""
    while True:
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            if line.startswith(b"{"):
                ready: dict[str, object] = json.loads(line)
                return ready
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(
                f"the OpenID provider did not start in {START_TIMEOUT:.0f} s" + _tail(log)
            )
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            code = process.wait()
            raise RuntimeError(f"the OpenID provider exited with {code}" + _tail(log))
        buffered += chunk


def _tail(log: IO[bytes]) -> str:
    log.flush()
    log.seek(0)
    text = log.read().decode("utf-8", "replace")[-4000:]
    return f"; its stderr:\n{text}" if text else ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()  # server.mjs exits when stdin closes
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_oidc_provider(clients: list[OidcClient]) -> Iterator[OidcProvider]:
    """Start `node server.mjs` with these clients registered; stop it on exit."""
    node = _require_node_modules()
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["OIDC_CLIENTS"] = json.dumps([client.to_json() for client in clients])
    env["NO_COLOR"] = "1"
    with (
        tempfile.TemporaryFile() as log,
        subprocess.Popen(
            [node, "server.mjs"],
            cwd=PROVIDER_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        ) as process,
    ):
        try:
            ready = _read_ready_line(process, log)
            issuer, port = ready["issuer"], ready["port"]
            assert isinstance(issuer, str), ready
            assert isinstance(port, int), ready
            yield OidcProvider(issuer=issuer, port=port)
        finally:
            _stop(process)
