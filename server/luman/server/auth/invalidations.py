"""The invalidation channel: what one server process forgets, every other process sharing its
database forgets before it answers its next call.

Each process keeps verified tokens (token_cache.py) and signing keys (key_ring.py) in memory.
The two ways in for a change that makes them wrong are `TokenCache.forget()` (a revoked sign-in
or CLI token, LogoutAll, a password change, a deleted account or service account) and
`KeyRing.rotate()`; once linked (`attach()`), both announce the change here after it has
committed, so no call site can forget to. Every other process applies the event: it drops the
cached tokens (`TokenCache.forgotten_elsewhere()`) or marks its keys stale (they reload before
their next use). Events are small: a kind, a UUID, and the sender's random id, so that a
process ignores its own.

Roles and memberships are not cached anywhere: OrganizationService reads the caller's
membership in the transaction of every call, so a role change or a removal holds on every
process from the next call without an event. A service account's organization and scopes are
in its token and never change; deleting it (or its organization) forgets it by credential.

The channel is something the deployment already has, nothing extra to run:

- PostgreSQL: LISTEN/NOTIFY on a channel named after the schema (two deployments in one
  database stay apart). Each process holds one dedicated connection (autocommit, taken from the
  engine and detached from its pool) that LISTENs, and a thread that reads it. A NOTIFY is sent
  right after the change commits, on a pooled connection.
- SQLite (workers or servers on one host and one database file): an append-only file next to
  the database (`<database>-invalidations`), of 32-byte records. A write() of 32 bytes to a
  file opened O_APPEND on a local file system lands whole and after every earlier one; each
  process reads on from its own offset. Past MAX_FILE_BYTES, a writer replaces the file (see
  FileChannel).

"The very next call is refused", deterministically:

- Every token-cache lookup first calls `catch_up()`, which applies whatever the channel holds
  that this process has not applied yet, so an event does not wait for the listener thread
  (which can lose the race against the next call: the GIL, the scheduler). SQLite: an fstat of
  the file against the read offset. PostgreSQL: a zero-timeout select() on the listen socket.
  Measured cost: about 1 µs a lookup (the figures are by the constants below).
- SQLite: the publisher's write() has returned before its call answers; the next fstat anywhere
  sees it.
- PostgreSQL: a NOTIFY reaches the listeners when the notifying statement commits, but each
  listener's backend writes it to its socket only when the scheduler gets to it: on the 2-core
  development machine, median 4 µs but p99 2.8 ms after pg_notify returned, longer than the
  next call takes. So the publisher waits (at most ACK_TIMEOUT) until every other listening
  process has acknowledged the event, that is, applied it. The listeners are found by their
  application_name in pg_stat_activity, read in the same statement as the NOTIFY, so a revoking
  call costs one round trip plus the acknowledgements (about 1.5 ms, measured with one other
  process). A process that does not acknowledge in time is logged; its entries fall back to
  the TTL. A publisher whose own listen connection is down cannot hear acknowledgements and
  does not wait: the others still get the event, without the guarantee.

Channel down (the listen connection lost: its backend terminated, PostgreSQL restarted, or
silently, caught by a heartbeat that does not come back, HEARTBEAT_INTERVAL; the file
unreadable): one warning, then other processes' revocations reach this one within
TOKEN_CACHE_TTL, as before the channel existed; a cache hit never waits for the channel. The
thread reconnects with backoff (RETRY_DELAYS); once back it empties the token cache and marks
the keys stale (events may have been missed) and logs the recovery.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import fcntl
import hashlib
import itertools
import logging
import os
import select
import struct
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import pq
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from luman.server.auth.key_ring import KeyRing
    from luman.server.auth.token_cache import TokenCache

logger = logging.getLogger(__name__)

# What catch_up() adds to each token-cache lookup with nothing pending (TokenCache.get() of a
# cached token, timeit, best of 60 x 20,000, 2-core development machine under load): 0.83 µs
# without a channel; PostgreSQL (lock + poll() of the listen socket) 1.59 µs, +0.76 µs; the
# SQLite file (lock + fstat) 2.21 µs, +1.4 µs. About 0.5 % of a cached GetMe at 16 streams
# (~330 µs of CPU per call at ~6,000 calls/s on two cores, BENCHMARKS.md).
# How long a publisher waits for every other listening process to acknowledge an event.
ACK_TIMEOUT = 2.0
# Seconds between reconnection attempts of a lost listen connection (the last one repeats).
RETRY_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
# The listener thread wakes this often even with nothing to read (a lost connection that sent
# no word, a replaced file).
IDLE_WAKE = 1.0
# PostgreSQL: a listen connection that has heard nothing for HEARTBEAT_INTERVAL (plus up to
# a third more, at random, so that one process's heartbeat usually spares the others theirs)
# sends itself a notification; unheard after HEARTBEAT_TIMEOUT, the connection is taken for
# lost. That catches what sends no word: an idle connection a firewall or NAT dropped, or a
# transaction-mode pooler, which takes LISTEN and never delivers.
HEARTBEAT_INTERVAL = 15.0
HEARTBEAT_TIMEOUT = 5.0
MAX_FILE_BYTES = 1 << 20  # 32768 events, then the file is replaced

_APPLICATION_NAME = "luman-invalidations"


class Kind(enum.Enum):
    CREDENTIAL = "c"  # a login session, CLI token or service account: TokenCache.forget
    USER = "u"  # every token of a user: TokenCache.forget
    KEYS = "k"  # the signing keys changed: KeyRing.mark_stale


@dataclasses.dataclass(frozen=True)
class Invalidation:
    kind: Kind
    subject: uuid.UUID | None = None


class InvalidationChannel:
    """One process's end of the channel. `attach()` links it to the caches, `start()` starts
    listening (a thread), `publish()` sends, `catch_up()` applies pending events now."""

    def __init__(self) -> None:
        self.sender = os.urandom(8)  # this instance's id, sent with its events
        self._lock = threading.Lock()  # the listen end (connection or file position)
        self._token_cache: TokenCache | None = None
        self._keys: KeyRing | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._down = False  # a warning was logged; the recovery will be

    def attach(self, token_cache: TokenCache | None, keys: KeyRing | None) -> None:
        """Apply other processes' events to these, and publish what they change."""
        self._token_cache, self._keys = token_cache, keys
        if token_cache is not None:
            token_cache.link(catch_up=self.catch_up, announce=self._forgotten)
        if keys is not None:
            keys.link(catch_up=self.catch_up, rotated=lambda: self.publish(Invalidation(Kind.KEYS)))

    def start(self) -> None:
        """Start listening. A channel that cannot start logs a warning and keeps trying."""
        raise NotImplementedError

    def publish(self, event: Invalidation) -> None:
        """Send `event` to every other process. Never raises: the change it announces has
        committed, and without the channel the others notice within TOKEN_CACHE_TTL."""
        raise NotImplementedError

    def catch_up(self) -> None:
        """Apply, now, every event that has arrived and is not applied yet. Cheap when there
        is none; never waits for a channel that is down."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def _forgotten(self, credential_id: uuid.UUID | None, user_id: uuid.UUID | None) -> None:
        if credential_id is not None:
            self.publish(Invalidation(Kind.CREDENTIAL, credential_id))
        if user_id is not None:
            self.publish(Invalidation(Kind.USER, user_id))

    def _apply(self, event: Invalidation) -> None:
        """Holding the lock: another process's event."""
        if event.kind is Kind.KEYS:
            if self._keys is not None:
                self._keys.mark_stale()
        elif self._token_cache is not None:
            if event.kind is Kind.CREDENTIAL:
                self._token_cache.forgotten_elsewhere(credential_id=event.subject)
            else:
                self._token_cache.forgotten_elsewhere(user_id=event.subject)

    def _missed(self) -> None:
        """Events may have been missed: forget everything they could have said."""
        if self._token_cache is not None:
            self._token_cache.forget_everything()
        if self._keys is not None:
            self._keys.mark_stale()

    def _went_down(self, what: str, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            logger.warning(
                "invalidation channel down (%s: %s): revocations made by other processes "
                "reach this one within TOKEN_CACHE_TTL until it is back",
                what,
                exc,
            )

    def _came_back(self) -> None:
        if self._down:
            self._down = False
            logger.info(
                "invalidation channel back: token cache emptied and signing keys reloaded, "
                "since events may have been missed"
            )


def open_channel(engine: Engine, *, peer: bool = True) -> InvalidationChannel | None:
    """The channel of the database behind `engine`: None for an in-memory SQLite database
    (one process: nothing to tell anyone).

    Args:
        peer: a server process, which acknowledges events and is waited for; False for a
            command that only publishes (`luman-server keys rotate`).
    """
    if engine.dialect.name == "postgresql":
        return PostgresChannel(engine, peer=peer)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        if database.startswith("file:"):
            return None  # a URI filename: shared memory, or paths this does not parse
        path = Path(database).resolve()
        return FileChannel(path.with_name(path.name + "-invalidations"))
    return None


# --- PostgreSQL ----------------------------------------------------------------------------


class PostgresChannel(InvalidationChannel):
    """LISTEN/NOTIFY. Payloads are text: `<kind> <sender> <seq> <uuid or ->` for an event,
    `a <acknowledger> <seq> <sender>` for an acknowledgement.

    Args:
        peer: announce this process (application_name) so that publishers wait for its
            acknowledgements, and acknowledge.
    """

    def __init__(self, engine: Engine, *, peer: bool = True) -> None:
        super().__init__()
        self._engine = engine
        self._notify_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._peer = peer
        self._name: str | None = None  # the channel, from the schema
        self._connection: psycopg.Connection[Any] | None = None  # the listen connection
        self._pgconn: pq.abc.PGconn | None = None  # set while listening
        # The listen socket, registered: polled with the lock held only (a poll object must
        # not be polled by two threads at once), by catch_up().
        self._poller = select.poll()
        self._dead: list[psycopg.Connection[Any]] = []  # lost ones, for the thread to close
        self._changed = threading.Condition(self._lock)
        self._sequence = itertools.count(1)
        self._waiting: dict[int, set[str]] = {}  # seq -> who acknowledged it
        # Processes that let an acknowledgement time out: not waited for again until they are
        # heard from (any notification of theirs), so that one hung process costs one
        # revocation ACK_TIMEOUT, not every revocation.
        self._silent: set[str] = set()
        self._acks: list[str] = []  # acknowledgements to send (the thread sends them)
        self._wake_read = self._wake_write = -1  # a pipe from start(): wakes the thread
        self._retry = 0
        self._retry_now = False
        self.retry_delays: Sequence[float] = RETRY_DELAYS
        self._heard = 0.0  # monotonic: the last notification received, any
        self._heartbeat_time: float | None = None  # when the unanswered heartbeat went
        self._quiet = HEARTBEAT_INTERVAL * (1 + int.from_bytes(os.urandom(1)) / 768)

    @property
    def connected(self) -> bool:
        return self._pgconn is not None

    @property
    def backend_pid(self) -> int | None:
        """The process id of the listen connection's backend (pg_terminate_backend in tests)."""
        pgconn = self._pgconn
        return None if pgconn is None else pgconn.backend_pid

    def start(self) -> None:
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._connect()
        self._thread = threading.Thread(target=self._run, name="invalidations", daemon=True)
        self._thread.start()

    def reconnect(self) -> None:
        """Try again now rather than at the next backoff step."""
        self._retry = 0
        self._retry_now = True
        self._wake()

    def close(self) -> None:
        self._closing.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._changed:
            connection, self._connection, self._pgconn = self._connection, None, None
            dead, self._dead = self._dead, []
            self._changed.notify_all()
        for lost in (connection, *dead):
            _close_quietly(lost)
        wake_fds = (self._wake_read, self._wake_write)
        self._wake_read = self._wake_write = -1
        for fd in wake_fds:
            if fd >= 0:
                os.close(fd)

    def catch_up(self) -> None:
        if self._pgconn is None:
            return  # down (or not started): the TTL is the fallback; never wait
        with self._lock:
            pgconn = self._pgconn
            if pgconn is not None and self._poller.poll(0):
                self._drain_locked(pgconn)

    def publish(self, event: Invalidation) -> None:
        seq = next(self._sequence)
        subject = "-" if event.subject is None else event.subject.hex
        payload = f"{event.kind.value} {self.sender.hex()} {seq} {subject}"
        with self._lock:
            self._waiting[seq] = set()
        try:
            try:
                with self._notify_engine.connect() as conn:
                    name = self._name or self._channel_name(conn)
                    listeners: list[str] = conn.execute(
                        text(
                            "SELECT pg_notify(:channel, :payload), ARRAY("
                            "SELECT application_name FROM pg_stat_activity "
                            "WHERE application_name LIKE :listeners)"
                        ),
                        {
                            "channel": name,
                            "payload": payload,
                            "listeners": _application_name(name, "") + "%",
                        },
                    ).one()[1]
            except SQLAlchemyError as exc:
                logger.warning(
                    "invalidation not sent (%s): other processes notice it within TOKEN_CACHE_TTL",
                    type(exc).__name__,
                )
                return
            others = {name.rsplit(" ", 1)[-1] for name in listeners} - {self.sender.hex()}
            with self._lock:
                others -= self._silent
            if others:
                self._await(seq, others)
        finally:
            with self._lock:
                del self._waiting[seq]

    def _await(self, seq: int, others: set[str]) -> None:
        deadline = time.monotonic() + ACK_TIMEOUT
        with self._changed:
            while True:
                if self._pgconn is None:
                    return  # this process's listener is down: no acknowledgement can come
                missing = others - self._waiting[seq]
                if not missing:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._silent |= missing
                    logger.warning(
                        "%d other process(es) did not acknowledge an invalidation within %.1f s: "
                        "they notice it within TOKEN_CACHE_TTL, and are not waited for again "
                        "until they are heard from",
                        len(missing),
                        ACK_TIMEOUT,
                    )
                    return
                self._changed.wait(remaining)

    def _channel_name(self, conn: Any) -> str:
        schema = conn.execute(text("SELECT current_schema()")).scalar() or ""
        self._name = _channel_for(schema)
        return self._name

    def _connect(self) -> bool:
        """Open the listen connection (outside the lock: nothing reads it until it is set)."""
        connection: psycopg.Connection[Any] | None = None
        try:
            # From the engine (its connect arguments and set-up), detached: ours for good, the
            # pool neither counts nor reuses it, and closing it closes it.
            raw = self._engine.raw_connection()
            raw.detach()
            dbapi = raw.dbapi_connection
            assert isinstance(dbapi, psycopg.Connection)
            connection = dbapi
            connection.autocommit = True
            pgconn = connection.pgconn
            # The low-level calls leave notifications for notifies(): psycopg's own execute()
            # would hand them to its handlers, and this one has none.
            schema = _exec(pgconn, b"SELECT current_schema()")
            name = _channel_for(schema or "")
            _exec(pgconn, b"LISTEN " + _quoted(name))
            if self._peer:
                # Listening first: a publisher that sees the name gets this process's answer.
                _exec(
                    pgconn,
                    b"SELECT set_config('application_name', $1, false)",
                    _application_name(name, self.sender.hex()),
                )
        except (SQLAlchemyError, psycopg.Error, OSError) as exc:
            _close_quietly(connection)
            self._went_down("cannot listen", exc)
            return False
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        with self._changed:
            self._name, self._connection, self._pgconn = name, connection, pgconn
            self._poller = poller
            self._heard, self._heartbeat_time = time.monotonic(), None
        return True

    def _run(self) -> None:
        while not self._closing.is_set():
            self._close_dead()
            pgconn = self._pgconn
            if pgconn is None:
                delay = self.retry_delays[min(self._retry, len(self.retry_delays) - 1)]
                self._retry += 1
                self._sleep(delay)
                if self._closing.is_set():
                    return
                if self._connect():
                    self._retry = 0
                    with self._lock:
                        # Events sent while no connection listened are lost.
                        self._missed()
                    self._came_back()
                continue
            # A connection lost meanwhile raises here; the drain below says so.
            with contextlib.suppress(OSError, ValueError, psycopg.Error):
                select.select([pgconn.socket, self._wake_read], [], [], IDLE_WAKE)
            self._drain_wake()
            with self._lock:
                if self._pgconn is pgconn:
                    self._drain_locked(pgconn)
            self._send_acks()
            self._check_heartbeat(pgconn)

    def _check_heartbeat(self, pgconn: pq.abc.PGconn) -> None:
        now = time.monotonic()
        sent = self._heartbeat_time
        if sent is not None and self._heard < sent:
            if now - sent >= HEARTBEAT_TIMEOUT:
                with self._lock:
                    if self._pgconn is pgconn:
                        self._lost_locked(
                            psycopg.OperationalError(
                                f"its own heartbeat did not come back in {HEARTBEAT_TIMEOUT:.0f} s"
                            )
                        )
            return
        if now - self._heard < self._quiet:
            return
        self._heartbeat_time = now
        name = self._name
        try:
            with self._notify_engine.connect() as conn:
                conn.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": name, "payload": f"h {self.sender.hex()} 0 -"},
                )
        except SQLAlchemyError:
            pass  # the database is away: unheard, the heartbeat says so in HEARTBEAT_TIMEOUT

    def _drain_locked(self, pgconn: pq.abc.PGconn) -> None:
        """Holding the lock: apply every notification received."""
        try:
            pgconn.consume_input()
            if pgconn.status != pq.ConnStatus.OK:
                raise psycopg.OperationalError("connection closed")
            while (notify := pgconn.notifies()) is not None:
                self._heard = time.monotonic()
                self._received(notify.extra)
        except psycopg.Error as exc:
            self._lost_locked(exc)
        self._changed.notify_all()

    def _lost_locked(self, exc: Exception) -> None:
        """Holding the lock: the listen connection is gone (the thread closes it)."""
        if self._connection is not None:
            self._dead.append(self._connection)
        self._connection = self._pgconn = None
        self._went_down("listen connection lost", exc)
        self._changed.notify_all()

    def _received(self, payload: bytes) -> None:
        """Holding the lock: one notification (one that does not parse is ignored)."""
        try:
            kind, sender, seq, subject = payload.decode().split(" ")
            number = int(seq)
            event = None
            if kind != "a":
                event = Invalidation(Kind(kind), None if subject == "-" else uuid.UUID(subject))
        except ValueError:
            return
        self._silent.discard(sender)
        me = self.sender.hex()
        if event is None:
            acknowledged = self._waiting.get(number) if subject == me else None
            if acknowledged is not None:
                acknowledged.add(sender)
            return
        if sender == me:
            return
        self._apply(event)
        if self._peer:
            self._acks.append(f"a {me} {seq} {sender}")
            self._wake()  # the thread sends it: a call that drained it does not wait for that

    def _send_acks(self) -> None:
        with self._lock:
            acks, self._acks = self._acks, []
            name = self._name
        if not acks or name is None:
            return
        try:
            with self._notify_engine.connect() as conn:
                conn.execute(
                    text("SELECT pg_notify(:channel, ack) FROM unnest(CAST(:acks AS text[])) ack"),
                    {"channel": name, "acks": acks},
                )
        except SQLAlchemyError as exc:
            # The publishers stop waiting at ACK_TIMEOUT; this process has applied the events.
            logger.warning("invalidation acknowledgements not sent (%s)", type(exc).__name__)

    def _close_dead(self) -> None:
        with self._lock:
            dead, self._dead = self._dead, []
        for connection in dead:
            _close_quietly(connection)

    def _sleep(self, seconds: float) -> None:
        """Wait `seconds`, or until close() or reconnect()."""
        deadline = time.monotonic() + seconds
        while not (self._closing.is_set() or self._retry_now):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                select.select([self._wake_read], [], [], remaining)
            except (OSError, ValueError):
                return
            self._drain_wake()
        self._retry_now = False

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EBADF):
                raise

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_read, 512):
                pass
        except OSError:
            pass


def _channel_for(schema: str) -> str:
    name = f"luman_invalidations:{schema}"
    # Channel names are identifiers: at most 63 bytes.
    if len(name.encode()) > 63:
        name = "luman_invalidations:" + hashlib.sha256(schema.encode()).hexdigest()[:32]
    return name


def _application_name(channel: str, sender: str) -> str:
    tag = hashlib.sha256(channel.encode()).hexdigest()[:12]
    return f"{_APPLICATION_NAME} {tag} {sender}"


def _quoted(name: str) -> bytes:
    return b'"' + name.replace('"', '""').encode() + b'"'


def _exec(pgconn: pq.abc.PGconn, query: bytes, *params: str) -> str | None:
    """Run one statement with libpq itself; the first value of its result."""
    if params:
        result = pgconn.exec_params(query, [p.encode() for p in params])
    else:
        result = pgconn.exec_(query)
    if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        message = (result.error_message or pgconn.error_message).decode(errors="replace")
        raise psycopg.OperationalError(message.strip())
    if result.status == pq.ExecStatus.TUPLES_OK and result.ntuples:
        value = result.get_value(0, 0)
        return None if value is None else bytes(value).decode()
    return None


def _close_quietly(connection: psycopg.Connection[Any] | None) -> None:
    if connection is None:
        return
    try:
        connection.close()
    except Exception:  # closing a connection that may be broken already
        logger.debug("closing the listen connection failed", exc_info=True)


# --- SQLite: a file ------------------------------------------------------------------------

# version, kind, 6 bytes of padding, sender (or a file id), subject UUID: 32 bytes.
_RECORD = struct.Struct("<BB6x8s16s")
_VERSION = 1
_KIND_CODES = {Kind.CREDENTIAL: 1, Kind.USER: 2, Kind.KEYS: 3}
_KINDS = {code: kind for kind, code in _KIND_CODES.items()}
_HEADER = 0x80  # a file's first record; sender: the file's id
_MOVED = 0x81  # a replaced file's last record; sender: the id of the file that replaced it
_NO_SUBJECT = bytes(16)


class FileChannel(InvalidationChannel):
    """Events appended to one file that every process sharing the database reads.

    Writers take an exclusive flock on `<file>.lock` (and a thread lock: flock does not
    exclude threads of one process). A writer that finds the file past MAX_FILE_BYTES writes
    a new file with a header record (its random id), renames it over the old one, and appends
    a MOVED record naming the new id to the old file, which readers still hold open: a reader
    reaching it opens the path and checks the header's id. A reader that finds another id (it
    skipped a whole file), or whose file was replaced without a MOVED record (deleted by hand),
    forgets everything and carries on from the end of the current file.
    """

    def __init__(self, path: Path, *, max_bytes: int = MAX_FILE_BYTES) -> None:
        super().__init__()
        self.path = path
        self._max_bytes = max_bytes
        self._fd: int | None = None  # the file being read
        self._offset = 0
        self._write_lock = threading.Lock()

    @property
    def connected(self) -> bool:
        return self._fd is not None

    def start(self) -> None:
        with self._lock:
            self._open_at_end()
        self._thread = threading.Thread(target=self._run, name="invalidations", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def catch_up(self) -> None:
        with self._lock:
            fd = self._fd
            if fd is None:
                return
            try:
                size = os.fstat(fd).st_size
            except OSError:
                return
            if size - self._offset >= _RECORD.size:
                self._read_locked(fd, size)

    def publish(self, event: Invalidation) -> None:
        subject = _NO_SUBJECT if event.subject is None else event.subject.bytes
        record = _RECORD.pack(_VERSION, _KIND_CODES[event.kind], self.sender, subject)
        try:
            with self._write_lock, _Flocked(self.path):
                fd = _open_for_append(self.path)
                try:
                    if os.fstat(fd).st_size >= self._max_bytes:
                        new = self._replace(fd)
                        os.close(fd)
                        fd = new
                    os.write(fd, record)
                finally:
                    os.close(fd)
        except OSError as exc:
            logger.warning(
                "invalidation not written to %s (%s): other processes notice it within "
                "TOKEN_CACHE_TTL",
                self.path,
                exc,
            )

    def _replace(self, old: int) -> int:
        """Holding the flock: put a new file in place of `old` and say so at the end of `old`;
        returns the new file, open for appending."""
        new_id = os.urandom(8)
        staging = self.path.with_name(self.path.name + ".new")
        fd = os.open(staging, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, _RECORD.pack(_VERSION, _HEADER, new_id, _NO_SUBJECT))
            os.replace(staging, self.path)
            os.write(old, _RECORD.pack(_VERSION, _MOVED, new_id, _NO_SUBJECT))
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_at_end(self) -> None:
        """Holding the lock: read from the current end of the file (creating it if need be);
        everything before is older than anything this process can have cached."""
        try:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                with self._write_lock, _Flocked(self.path):
                    os.close(_open_for_append(self.path))
                fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            self._went_down(f"cannot read {self.path}", exc)
            return
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._offset = fd, os.fstat(fd).st_size

    def _read_locked(self, fd: int, size: int) -> None:
        """Holding the lock: apply the whole records from the offset to `size`."""
        while True:
            count = (size - self._offset) // _RECORD.size
            data = os.pread(fd, count * _RECORD.size, self._offset)
            for start in range(0, len(data) - _RECORD.size + 1, _RECORD.size):
                self._offset += _RECORD.size
                version, code, sender, subject = _RECORD.unpack_from(data, start)
                if version != _VERSION or code == _HEADER or sender == self.sender:
                    continue
                if code == _MOVED:
                    fd, size = self._follow(sender)
                    if fd < 0:
                        return
                    break
                kind = _KINDS.get(code)
                if kind is not None:
                    self._apply(
                        Invalidation(
                            kind, None if subject == _NO_SUBJECT else uuid.UUID(bytes=subject)
                        )
                    )
            else:
                return

    def _follow(self, file_id: bytes) -> tuple[int, int]:
        """Holding the lock: the file that replaced ours; (its fd, its size)."""
        old = self._fd
        self._fd = None
        if old is not None:
            os.close(old)
        self._open_at_end()
        if self._fd is None:
            return -1, 0
        header = os.pread(self._fd, _RECORD.size, 0)
        if len(header) == _RECORD.size and _RECORD.unpack(header)[1:3] == (_HEADER, file_id):
            self._offset = _RECORD.size  # read it all: every event since it replaced ours
        else:
            self._missed()  # replaced more than once since: a whole file was skipped
        return self._fd, os.fstat(self._fd).st_size

    def _run(self) -> None:
        while not self._closing.wait(IDLE_WAKE / 2):
            self.catch_up()
            with self._lock:
                self._check_replaced()

    def _check_replaced(self) -> None:
        """Holding the lock: the file at the path is no longer ours and ours did not say so
        (deleted or replaced by hand), or ours could not be opened: start again."""
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            return  # the next publish creates it; then it is a replacement
        except OSError as exc:
            self._went_down(f"cannot read {self.path}", exc)
            return
        # An inode number is not reused while our descriptor keeps the file open.
        fd = self._fd
        if fd is not None and os.fstat(fd).st_ino == current:
            return
        if fd is not None:
            # Perhaps a writer has renamed and is about to write its MOVED record: read once
            # more. (If it has not yet, forgetting everything below is merely cautious.)
            self._read_locked(fd, os.fstat(fd).st_size)
            if self._fd is not None and os.fstat(self._fd).st_ino == current:
                return
            logger.info("%s was replaced without notice: token cache emptied", self.path)
        self._open_at_end()
        if self._fd is not None:
            self._missed()
            self._came_back()


class _Flocked:
    """An exclusive flock on `<path>.lock` for the block."""

    def __init__(self, path: Path) -> None:
        self._path = path.with_name(path.name + ".lock")
        self._fd = -1

    def __enter__(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self._fd)
            raise

    def __exit__(self, *_exc: object) -> None:
        os.close(self._fd)  # releases the lock


def _open_for_append(path: Path) -> int:
    """Holding the flock: the file, opened for appending; a new one gets its header first."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size == 0:
            os.write(fd, _RECORD.pack(_VERSION, _HEADER, os.urandom(8), _NO_SUBJECT))
    except BaseException:
        os.close(fd)
        raise
    return fd
