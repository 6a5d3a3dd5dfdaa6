"""`luman-server serve --workers 2` as an operator runs it: one port pair for both workers,
limits counted once, a killed worker replaced without losing a request-log row, SIGTERM
draining everything, and a second server on the same ports refused."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.db.session import make_engine
from tests.serve_process import free_port, serve_env

WAIT = 60.0  # seconds: only a broken test waits this long
GET_JWKS = "/luman.auth.v1.AuthService/GetJwks"
# The DEBUG line of each call: `... luman.interceptors.request_logging[worker 1]: rpc <method>
# <status> ...`.
RPC_LINE = re.compile(r"request_logging\[worker (\d+)\]: rpc (\S+) (\S+) ")


class Served:
    """A `serve` process whose stderr is read as it comes (the workers log there too)."""

    def __init__(self, tmp_path: Path, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "luman.server", "serve", *args],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = int(env["PORT"])
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, pattern: str, after: int = 0) -> re.Match[str]:
        """The first log line from index `after` on that matches `pattern`."""
        deadline = time.monotonic() + WAIT
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if found := re.search(pattern, line):
                        return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (
                    self.process.poll() is not None and not self._reader.is_alive()
                ):
                    raise AssertionError(
                        f"no log line matching {pattern!r}:\n{''.join(self.lines)}"
                    )
                self._changed.wait(remaining)

    def rpc_lines(self) -> list[tuple[int, str, str]]:
        return [(int(m[1]), m[2], m[3]) for line in self.lines if (m := RPC_LINE.search(line))]

    def wait_for_rpc_lines(self, method: str, count: int) -> list[tuple[int, str, str]]:
        """The rpc lines once `count` of them are for `method`: a worker logs a call after
        answering it, so the line can arrive after the client has its answer."""
        deadline = time.monotonic() + WAIT
        with self._changed:
            while True:
                lines = self.rpc_lines()
                if sum(1 for _, m, _ in lines if m == method) >= count:
                    return lines
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{count} {method} lines expected:\n{''.join(self.lines)}")
                self._changed.wait(remaining)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(WAIT)
        self._reader.join(WAIT)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def serving(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[Served]:
    served = Served(tmp_path, env, *args)
    try:
        yield served
    finally:
        served.kill()


def workers_env(tmp_path: Path, database_url: str, **extra: str) -> dict[str, str]:
    settings = {
        "LOG_LEVEL": "DEBUG",  # each call's `rpc` line names the worker that answered it
        "BCRYPT_ROUNDS": "4",
        "SHUTDOWN_GRACE_PERIOD": "5s",
        "RATE_LIMIT_MAX_REQUESTS": "1000000",
        "AUTH_RATE_LIMIT_MAX_REQUESTS": "1000000",
        **extra,
    }
    return serve_env(tmp_path, database_url, free_port(), **settings)


def one_call(port: int, call: Callable[[auth_service_pb2_grpc.AuthServiceStub], object]) -> str:
    """`call` on a connection of its own (the kernel picks the worker per connection); the
    status name."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            call(auth_service_pb2_grpc.AuthServiceStub(channel))
        except grpc.RpcError as exc:
            return exc.code().name
    return "OK"


def get_jwks(stub: auth_service_pb2_grpc.AuthServiceStub) -> object:
    return stub.GetJwks(auth_service_pb2.GetJwksRequest(), timeout=10)


def anonymous_get_me(stub: auth_service_pb2_grpc.AuthServiceStub) -> object:
    return stub.GetMe(auth_service_pb2.GetMeRequest(), timeout=10)


def count_rows(database_url: str, method: str, status: str) -> int:
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    sa.text("SELECT count(*) FROM request_logs WHERE method = :m AND status = :s"),
                    {"m": method, "s": status},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_limits_are_counted_once_across_workers(tmp_path: Path, database_url: str) -> None:
    """A per-address limit of 20: calls on fresh connections land on both workers, and
    exactly 20 are admitted in all (a limit per worker would admit up to 40)."""
    limit = 20
    env = workers_env(tmp_path, database_url, RATE_LIMIT_MAX_REQUESTS=str(limit))
    with serving(tmp_path, env, "--workers", "2") as served:
        served.wait_for("serving with 2 workers")
        statuses = [one_call(served.port, anonymous_get_me) for _ in range(limit + 5)]
        assert served.stop() == 0, served.log
    assert collections.Counter(statuses) == {"UNAUTHENTICATED": limit, "RESOURCE_EXHAUSTED": 5}
    admitted_by = collections.Counter(
        worker for worker, _, status in served.rpc_lines() if status == "UNAUTHENTICATED"
    )
    # Both workers admitted calls (all 20 on one has odds of 2 in a million).
    assert set(admitted_by) == {0, 1}, served.log
    assert sum(admitted_by.values()) == limit


def test_a_killed_worker_is_replaced_and_loses_no_request_log_row(
    tmp_path: Path, database_url: str
) -> None:
    env = workers_env(tmp_path, database_url)
    with serving(tmp_path, env, "--workers", "2") as served:
        served.wait_for("serving with 2 workers")
        victim = int(served.wait_for(r"worker 1 started \(pid (\d+)\)")[1])
        statuses = [one_call(served.port, get_jwks) for _ in range(30)]
        assert statuses == ["OK"] * 30
        # Calls of the victim's still waiting for their batch (up to a second) are only in
        # its spool when it dies.
        answered_by = collections.Counter(
            w for w, m, _ in served.wait_for_rpc_lines(GET_JWKS, 30) if m == GET_JWKS
        )
        assert answered_by[1] > 0, served.log
        mark = len(served.lines)
        os.kill(victim, signal.SIGKILL)
        served.wait_for(r"worker 1 \(pid \d+\) was killed by SIGKILL", after=mark)
        served.wait_for(r"worker 1 \(pid \d+\) is serving", after=mark)
        statuses += [one_call(served.port, get_jwks) for _ in range(30)]
        assert served.stop() == 0, served.log
    assert "received SIGTERM: stopping 2 workers" in served.log
    ok = statuses.count("OK")
    assert ok >= 30 + 29, statuses  # a call may meet the dying worker's connection, no more
    # Every call that answered OK has its row, once: the replacement replayed the spool.
    assert count_rows(database_url, GET_JWKS, "OK") == ok, served.log
    assert not list((tmp_path / "data" / "request-log-spool").glob("*.spool"))


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated SQLite file, for what no database takes part in (binding, start-up)."""
    path = tmp_path / "luman.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.mark.parametrize("first", ["workers", "single"])
def test_a_second_server_on_the_same_ports_fails_to_start(
    tmp_path: Path, sqlite_url: str, first: str
) -> None:
    database_url = sqlite_url
    env = workers_env(tmp_path, database_url, LOG_LEVEL="INFO")
    first_args, then_args = (
        (("--workers", "2"), ()) if first == "workers" else ((), ("--workers", "2"))
    )
    ready = "serving with 2 workers" if first == "workers" else "serving HTTP/JSON"
    with serving(tmp_path, env, *first_args) as served:
        served.wait_for(ready)
        for args, same in ((then_args, "PORT"), (("--workers", "2"), "HTTP_PORT")):
            other = dict(env, PORT=str(free_port()), HTTP_PORT=str(free_port()))
            other[same] = env[same]
            second = subprocess.run(
                [sys.executable, "-m", "luman.server", "serve", *args],
                env=other,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=WAIT,
                check=False,
            )
            assert second.returncode == 1, second.stderr
            assert f"cannot listen on 127.0.0.1:{env[same]}" in second.stderr
            assert "is another server using the port?" in second.stderr
        assert served.process.poll() is None
        assert served.stop() == 0, served.log


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path: Path, sqlite_url: str) -> None:
    """Worker 0's metrics port is taken: after three failed starts in a row, exit 1."""
    database_url = sqlite_url
    with contextlib.closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        env = workers_env(tmp_path, database_url, LOG_LEVEL="INFO", METRICS_PORT=str(metrics_port))
        with serving(tmp_path, env, "--workers", "2") as served:
            assert served.process.wait(WAIT) == 1
            served._reader.join(WAIT)
    assert "worker 0 (pid" in served.log
    assert "3 of 3 failed starts in a row" in served.log
    assert "worker 0 cannot start: stopping every worker" in served.log
