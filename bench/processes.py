"""Server processes for the harness: pinned with taskset, started with a READY handshake,
always stopped (SIGTERM, then SIGKILL) when the `with` block ends."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import grpc

START_TIMEOUT_SECONDS = 60.0
SETTLE_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 40.0  # the product's default 10 s grace, plus the request-log flush


class ServerError(Exception):
    """A server process did not come up; the message carries the tail of its log."""


@dataclasses.dataclass(frozen=True)
class CpuPlan:
    """Which CPU the server and the load generator get (None: not pinned)."""

    server: int | None
    load: int | None
    note: str

    @classmethod
    def detect(cls) -> CpuPlan:
        cpus = sorted(os.sched_getaffinity(0))
        if shutil.which("taskset") is None:
            return cls(None, None, "not pinned (taskset missing)")
        if len(cpus) < 2:
            return cls(None, None, f"not pinned (one CPU: {cpus[0]})")
        return cls(cpus[0], cpus[1], f"server on CPU {cpus[0]}, h2load on CPU {cpus[1]}")

    @staticmethod
    def pin(cpu: int | None) -> tuple[str, ...]:
        if cpu is None:
            return ()
        return ("taskset", "-c", str(cpu))


class ServerProcess:
    """A started server; its stdout carries `READY <port> [<http port>]` and, on exit,
    `STATS <json>`."""

    def __init__(self, name: str, process: subprocess.Popen[str], log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self.port = 0
        self.http_port = 0  # 0: the server has no HTTP door
        self.stats: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        stdout = self._stdout()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not selector.select(timeout=0.2):
                    if self.process.poll() is not None:
                        break
                    continue
                line = stdout.readline()
                if not line:
                    break
                tag, _, rest = line.strip().partition(" ")
                if tag == "READY":
                    ports = [int(port) for port in rest.split()]
                    self.port, self.http_port = ports[0], (ports[1:] or [0])[0]
                    return
        raise ServerError(f"{self.name} did not start: {self.log_tail()}")

    def peak_rss_bytes(self) -> int | None:
        """VmHWM: the most resident memory the process has had."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM (graceful: the product flushes its request log), SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ValueError, OSError):
            for line in self._stdout().read().splitlines():
                tag, _, rest = line.strip().partition(" ")
                if tag == "STATS":
                    self.stats = json.loads(rest)

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def _stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout


@contextlib.contextmanager
def python_server(
    name: str,
    module: str,
    args: list[str],
    *,
    env: Mapping[str, str],
    cpu: int | None,
    workdir: Path,
) -> Iterator[ServerProcess]:
    """Run `python -m module args` pinned to `cpu`, from `workdir`, until the block ends."""
    log_path = workdir / f"{name}.log"
    command = [*CpuPlan.pin(cpu), sys.executable, "-m", module, *args]
    with log_path.open("w") as log:
        # Our own interpreter and module names; no shell.
        process = subprocess.Popen(  # noqa: S603
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=dict(env),
            cwd=workdir,
        )
    server = ServerProcess(name, process, log_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def harness_env() -> dict[str, str]:
    """The environment for child Python processes: ours, with the repo root importable (the
    `bench` package lives there, and children run from a temporary directory)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def settle(port: int, timeout: float = SETTLE_TIMEOUT_SECONDS) -> None:
    """Wait until the server at 127.0.0.1:`port` has worked off what h2load abandoned.

    h2load closes its connection with calls still in flight when a run ends, and grpcio runs
    those handlers to the end anyway (for Login, seconds of bcrypt); the next run would queue
    behind them. A call made now waits in the same FIFO executor queue, so by the time it
    is answered the backlog has been taken up. Health/Check: the product answers it, the bare
    server answers every method; bytes in, bytes out, so either reply will do.

    Raises:
        grpc.RpcError: the server did not answer within `timeout` seconds.
    """
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None
        )
        check(b"", timeout=timeout)


@contextlib.contextmanager
def served_with_workers(
    name: str, workers: int, *, env: Mapping[str, str], workdir: Path
) -> Iterator[ServerProcess]:
    """`luman-server serve --workers N` exactly as an operator runs it (1: the single-process
    serve), on fresh loopback ports, not pinned: N workers need N cores. Ready once the log
    says every worker serves."""
    grpc_port, http_port = _free_port(), _free_port()
    log_path = workdir / f"{name}.log"
    command = [sys.executable, "-m", "luman.server", "serve", "--workers", str(workers)]
    ready = "serving with" if workers > 1 else "serving HTTP/JSON"
    with log_path.open("w") as log:
        # Our own interpreter and module; no shell.
        process = subprocess.Popen(  # noqa: S603
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**env, "PORT": str(grpc_port), "HTTP_PORT": str(http_port)},
            cwd=workdir,
        )
    server = ServerProcess(name, process, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while ready not in log_path.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"{name} did not start: {server.log_tail()}")
            time.sleep(0.1)
        server.port, server.http_port = grpc_port, http_port
        yield server
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
