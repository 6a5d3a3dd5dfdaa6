"""`serve --workers N`: N worker processes on the same gRPC and HTTP ports, supervised.

The ports. The supervisor first binds each port without SO_REUSEPORT, which fails while any
other server holds it (a single `serve`, or another supervisor's reservation), with the same
message a single `serve` gives. It then reserves it: a socket bound with SO_REUSEPORT alone,
never listening, kept until the supervisor exits (port 0 becomes the port the kernel chose, for
every worker). Each worker binds and listens with SO_REUSEPORT too, and the kernel spreads new
connections over the listening sockets. The reservation keeps the ports while every worker is
being restarted, and a later `serve` on them fails: a socket without SO_REUSEPORT cannot join
the group. (Another program of the same user that sets SO_REUSEPORT could; grpcio servers do
by default.) A connection is bound to one worker for its life: when a worker dies, its clients
reconnect and land on the others.

The workers. grpcio's threads do not survive fork(), so each worker is a fresh interpreter:
`python -m luman.server serve --worker-slot K`, started by subprocess (fork and exec at once,
no Python runs in between) with the supervisor's environment and the resolved ports. A
subprocess rather than a multiprocessing "spawn" child: it is exactly the command an operator
runs, reads the same settings the same way, logs to the same stderr, and its exit status says
how it ended (a negative returncode is the signal). The supervisor builds no gRPC object.

Each worker holds one end of a socketpair: it writes a byte once it serves (the supervisor
logs when all are up, and counts a worker that dies before as a failed start), and it shuts
itself down gracefully if the pair reaches EOF, i.e. if the supervisor died (even by SIGKILL):
no orphaned worker keeps the ports.

Supervision. A worker that dies is logged (slot, pid, exit code or signal) and started again
in the same slot: at once the first time, then after a backoff doubling from RESTART_BACKOFF
to RESTART_BACKOFF_MAX while it keeps dying within STABLE_SECONDS of its start. A slot whose
worker fails MAX_FAILED_STARTS times in a row before serving (a bad certificate, a database
that refuses it) stops everything: exit status 1. SIGTERM or SIGINT: every worker is sent
SIGTERM and drains as a single `serve` does (SHUTDOWN_GRACE_PERIOD, then the request log);
one still running STOP_MARGIN seconds after the grace is killed. SIGHUP is passed on (TLS
certificate reload).

What each worker has of its own: GRPC_MAX_WORKERS threads and a database pool of that size,
the password-hash slots, the token cache, the metrics (METRICS_PORT + slot when set), the
background threads (request-log writer, audit retention, mail delivery: the mail queue is
leased per message, retention deletes are idempotent, and the first signing key is created
race-free, see auth/key_ring.py). What they share: the database, the rate limits (Redis with
RATE_LIMIT_REDIS_URL, else the SQLite file of rate_limit_sqlite.py in LUMAN_DATA_DIR), and
nothing else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from luman.server.config import Settings

logger = logging.getLogger("luman.server.supervisor")

RESTART_BACKOFF = 0.5  # seconds before the second restart of a slot that keeps dying
RESTART_BACKOFF_MAX = 10.0
STABLE_SECONDS = 30.0  # a worker that served this long is restarted at once when it dies
MAX_FAILED_STARTS = 3  # deaths in a row before serving, per slot, before giving up
STOP_MARGIN = 35.0  # seconds past the grace: the request log's own close timeout, and some
POLL_SECONDS = 0.2
READY = b"r"
RATE_LIMIT_STORE = "rate-limits.sqlite"  # in LUMAN_DATA_DIR, when workers share no Redis


class SupervisorError(Exception):
    """The supervisor cannot start (a port is taken)."""


def worker_count(value: str) -> int:
    """`--workers`: a positive number, or "auto" (the CPUs this process may run on)."""
    if value == "auto":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    count = int(value)
    if count < 1:
        raise ValueError("must be at least 1")
    return count


def worker_settings(settings: Settings, slot: int) -> Settings:
    """The settings of the worker in `slot`: SO_REUSEPORT, a metrics port of its own."""
    metrics_port = settings.metrics_port
    if metrics_port:
        metrics_port += slot
    return dataclasses.replace(settings, worker_slot=slot, metrics_port=metrics_port)


def rate_limit_store(settings: Settings) -> Path | None:
    """The shared rate-limit file of supervised workers; None with Redis (or no workers)."""
    if settings.worker_slot is None or settings.rate_limit_redis_url:
        return None
    return settings.data_dir / RATE_LIMIT_STORE


def watch_supervisor(channel_fd: int, slot: int) -> socket.socket:
    """In a worker: return the channel to the supervisor; a thread SIGTERMs this process
    when the supervisor goes away (EOF)."""
    channel = socket.socket(fileno=channel_fd)

    def watch() -> None:
        try:
            while channel.recv(1):
                pass
        except OSError:
            pass
        logger.warning("worker %d: the supervisor is gone; shutting down", slot)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()
    return channel


def tell_ready(channel: socket.socket) -> None:
    with contextlib.suppress(OSError):
        channel.sendall(READY)


@dataclasses.dataclass
class _Worker:
    slot: int
    process: subprocess.Popen[bytes]
    channel: socket.socket
    started: float
    ready: bool = False
    closed: bool = False  # the channel reached EOF: the worker is exiting


class Supervisor:
    """Runs `count` workers until SIGTERM/SIGINT; see the module docstring."""

    def __init__(self, settings: Settings, count: int, hangup: threading.Event) -> None:
        self._settings = settings
        self._count = count
        self._hangup = hangup
        self._stop = threading.Event()
        self._stopping_signal = ""
        self._workers: dict[int, _Worker] = {}
        self._failed_starts = dict.fromkeys(range(count), 0)
        self._backoff = dict.fromkeys(range(count), 0.0)
        self._restart_at: dict[int, float] = {}
        self._ports: tuple[int, int] = (0, 0)
        self._announced = False
        self._env: dict[str, str] = {}  # what the workers' environment adds: resolved ports

    def run(self) -> int:
        """Serve until told to stop; the exit status (0: every worker drained)."""
        settings = self._settings
        with contextlib.ExitStack() as stack:
            grpc_socket = _reserve(settings.host, settings.port, "")
            stack.callback(grpc_socket.close)
            http_socket = _reserve(settings.host, settings.http_port, " (HTTP_PORT)")
            stack.callback(http_socket.close)
            self._ports = (grpc_socket.getsockname()[1], http_socket.getsockname()[1])
            if settings.mtls_port is not None:
                mtls_socket = _reserve(settings.host, settings.mtls_port, " (MTLS_PORT)")
                stack.callback(mtls_socket.close)
                self._env["MTLS_PORT"] = str(mtls_socket.getsockname()[1])
            if not settings.rate_limit_redis_url:
                # Created once here: workers opening a new file at the same moment would race.
                from luman.interceptors.rate_limit_sqlite import SqliteStore

                settings.data_dir.mkdir(parents=True, exist_ok=True)
                SqliteStore(settings.data_dir / RATE_LIMIT_STORE).close()
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
            logger.info(
                "supervisor (pid %d): starting %d workers on gRPC port %d and HTTP port %d",
                os.getpid(),
                self._count,
                *self._ports,
            )
            for slot in range(self._count):
                self._start(slot)
            status = self._supervise()
            return self._stop_all() if status == 0 else status
        return 1  # pragma: no cover - the ExitStack swallows nothing

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping_signal = signal.Signals(signum).name
        self._stop.set()

    def _start(self, slot: int) -> None:
        ours, theirs = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            "luman.server",
            "serve",
            "--workers",
            str(self._count),
            "--worker-slot",
            str(slot),
            "--worker-channel",
            str(theirs.fileno()),
        ]
        env = dict(os.environ, PORT=str(self._ports[0]), HTTP_PORT=str(self._ports[1]), **self._env)
        try:
            process = subprocess.Popen(command, env=env, pass_fds=(theirs.fileno(),))  # noqa: S603
        finally:
            theirs.close()
        ours.setblocking(False)
        self._workers[slot] = _Worker(slot, process, ours, time.monotonic())
        logger.info("worker %d started (pid %d)", slot, process.pid)

    def _supervise(self) -> int:
        """Until a stop signal (0), or a slot that cannot start (1)."""
        while not self._stop.is_set():
            channels = [w.channel for w in self._workers.values() if not (w.ready or w.closed)]
            if channels:
                readable, _, _ = select.select(channels, [], [], POLL_SECONDS)
                for worker in list(self._workers.values()):
                    if worker.channel in readable:
                        self._read_ready(worker)
            else:
                self._stop.wait(POLL_SECONDS)
            if self._hangup.is_set():
                self._hangup.clear()
                logger.info("received SIGHUP: passing it on to the workers")
                self._signal_all(signal.SIGHUP)
            for slot, worker in list(self._workers.items()):
                if self._stop.is_set():
                    break
                code = worker.process.poll()
                if code is None:
                    continue
                worker.channel.close()
                del self._workers[slot]
                if self._died(worker, code):
                    return 1
            now = time.monotonic()
            for slot, due in list(self._restart_at.items()):
                if now >= due and not self._stop.is_set():
                    del self._restart_at[slot]
                    self._start(slot)
        return 0

    def _read_ready(self, worker: _Worker) -> None:
        try:
            data = worker.channel.recv(16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if READY not in data:
            worker.closed = not data  # EOF: the worker is exiting; poll() reports how
            return
        worker.ready = True
        self._failed_starts[worker.slot] = 0
        logger.info("worker %d (pid %d) is serving", worker.slot, worker.process.pid)
        everyone = len(self._workers) == self._count
        if not self._announced and everyone and all(w.ready for w in self._workers.values()):
            self._announced = True
            logger.info(
                "serving with %d workers: gRPC on %s:%d, HTTP/JSON on %s:%d",
                self._count,
                self._settings.host,
                self._ports[0],
                self._settings.host,
                self._ports[1],
            )

    def _died(self, worker: _Worker, code: int) -> bool:
        """Log the death and schedule the restart; True: give up."""
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        lived = time.monotonic() - worker.started
        if not worker.ready:
            self._failed_starts[worker.slot] += 1
            failures = self._failed_starts[worker.slot]
            logger.error(
                "worker %d (pid %d) %s before serving (%d of %d failed starts in a row)",
                worker.slot,
                worker.process.pid,
                how,
                failures,
                MAX_FAILED_STARTS,
            )
            if failures >= MAX_FAILED_STARTS:
                logger.error("worker %d cannot start: stopping every worker", worker.slot)
                self._stop_all()
                return True
        else:
            logger.error(
                "worker %d (pid %d) %s after %.1fs; restarting it",
                worker.slot,
                worker.process.pid,
                how,
                lived,
            )
        if lived >= STABLE_SECONDS:
            self._backoff[worker.slot] = 0.0
        delay = self._backoff[worker.slot]
        self._backoff[worker.slot] = min(max(delay * 2, RESTART_BACKOFF), RESTART_BACKOFF_MAX)
        if delay:
            logger.info("restarting worker %d in %.1fs", worker.slot, delay)
        self._restart_at[worker.slot] = time.monotonic() + delay
        return False

    def _signal_all(self, signum: signal.Signals) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signum)

    def _stop_all(self) -> int:
        """SIGTERM every worker and wait for it to drain; 0 if every one exited 0."""
        if self._stopping_signal:
            logger.info(
                "received %s: stopping %d workers", self._stopping_signal, len(self._workers)
            )
        self._restart_at.clear()
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self._settings.shutdown_grace_seconds + STOP_MARGIN
        status = 0
        for worker in self._workers.values():
            try:
                code = worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error(
                    "worker %d (pid %d) did not stop in time: killing it",
                    worker.slot,
                    worker.process.pid,
                )
                worker.process.kill()
                code = worker.process.wait()
            if code != 0:
                status = 1
                logger.error(
                    "worker %d (pid %d) exited with %d", worker.slot, worker.process.pid, code
                )
            worker.channel.close()
        self._workers.clear()
        logger.info("stopped")
        return status


def _reserve(host: str, port: int, what: str) -> socket.socket:
    """Fail as a single `serve` would if anything holds host:port, then hold it for the
    workers: bound with SO_REUSEPORT, never listening (see the module docstring)."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bind_to = (host.strip("[]"), port)
    with _socket(family) as probe:
        # As the workers' listeners (and a single serve's) bind: connections of the previous
        # run still in TIME_WAIT must not keep a restart off the port; a listener still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(bind_to)
        except OSError as exc:
            raise SupervisorError(
                f"cannot listen on {address}{what}: is another server using the port? ({exc})"
            ) from exc
        if port == 0:
            bind_to = (bind_to[0], probe.getsockname()[1])
    reservation = _socket(family)
    try:
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind(bind_to)
    except OSError as exc:
        reservation.close()
        raise SupervisorError(
            f"cannot listen on {address}{what}: is another server using the port? ({exc})"
        ) from exc
    return reservation


def _socket(family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET6:
        # "::" holds the IPv4 port too, as the workers' dual-stack listeners do.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return sock
