"""CLI fixtures: the real `luman` click group, run by CliRunner against the real server."""

from __future__ import annotations

import dataclasses
import shutil
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from luman.cli.main import cli
from luman.server.app import App
from tests.client.conftest import scripted
from tests.client.tls import certificate, tls_server

__all__ = ["certificate", "scripted", "tls_server"]  # fixtures shared with the client tests


@dataclasses.dataclass
class Luman:
    """Runs `luman --api-url 127.0.0.1:<port> ARGS` with its own config folder ("machine")."""

    runner: CliRunner
    api_url: str | None
    config_dir: Path

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        api_url: str | None = "",
        env: Mapping[str, str | None] | None = None,
    ) -> Result:
        url = self.api_url if api_url == "" else api_url
        prefix: Sequence[str] = ("--api-url", url) if url else ()
        environment: dict[str, str | None] = {
            "LUMAN_CONFIG_DIR": str(self.config_dir),
            "LUMAN_API_URL": None,
            "LUMAN_TIMEOUT": None,
            "LUMAN_CA_CERT": None,
            **(env or {}),
        }
        # catch_exceptions=False: a traceback fails the test instead of hiding in Result.
        return self.runner.invoke(
            cli, [*prefix, *args], input=input, env=environment, catch_exceptions=False
        )

    def machine(self, name: str) -> Luman:
        """The same CLI with another config folder, as if on another computer."""
        return dataclasses.replace(self, config_dir=self.config_dir.parent.parent / name / ".luman")

    def copy_login_to(self, other: Luman) -> None:
        """Copy the saved login, as a user copying ~/.luman to another computer would."""
        shutil.copytree(self.config_dir, other.config_dir)

    @property
    def auth_file(self) -> Path:
        return self.config_dir / "auth.json"


@pytest.fixture
def luman(app: App, tmp_path: Path) -> Luman:
    return Luman(CliRunner(), f"127.0.0.1:{app.port}", tmp_path / "machine-a" / ".luman")


@pytest.fixture
def offline_luman(tmp_path: Path, closed_port: int) -> Luman:
    """The CLI pointed at a port where nothing listens."""
    return Luman(CliRunner(), f"127.0.0.1:{closed_port}", tmp_path / "offline" / ".luman")


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
