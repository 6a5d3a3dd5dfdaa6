"""`luman-server serve` as a child process, for the shutdown tests of the gRPC and HTTP doors."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

IN_FLIGHT_TIMEOUT = 30  # seconds: only a broken test waits this long


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(tmp_path: Path, database_url: str, port: int, **extra: str) -> dict[str, str]:
    """Our environment without its secrets, database and ports, pointed at `database_url`,
    listening on 127.0.0.1:`port` (HTTP on a free port unless `extra` names HTTP_PORT)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "DATABASE_URL", "PORT"))
    }
    env.update(
        LUMAN_DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=database_url,
        HOST="127.0.0.1",
        PORT=str(port),
        HTTP_PORT=str(free_port()),
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def serving(tmp_path: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`luman-server serve` run in `tmp_path` (no stray .env is read); killed if still running
    when the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "luman.server", "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_for_work_in_flight(
    process: subprocess.Popen[str], done: Callable[[], bool] = lambda: False
) -> None:
    """Return once the server burns CPU on the call (or `done()`): an idle server uses next to
    none, and bcrypt at cost 13 keeps a core busy for far longer than this wait."""
    start = cpu_ticks(process.pid)
    deadline = time.monotonic() + IN_FLIGHT_TIMEOUT
    while cpu_ticks(process.pid) - start < 5 and not done():  # 50 ms at 100 ticks/s
        assert process.poll() is None, "server exited early"
        assert time.monotonic() < deadline, "the call never reached the server"
        time.sleep(0.005)  # polling interval, not a timing assumption
