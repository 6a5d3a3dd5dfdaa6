"""A loopback TCP proxy that a test cuts and restores: a dependency outage without stopping it.

The server under test connects to the proxy instead of the real service (PostgreSQL, say).
`cut()` closes every connection through the proxy, as a restarting database does, and then
either refuses new connections (the listening socket is closed: connect() gets ECONNREFUSED)
or blackholes them (they are accepted and then never answered, like packets dropped by a
firewall). `restore()` listens and forwards again, on the same port. Everything stays on
127.0.0.1; the real service is never touched.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Literal

CutMode = Literal["refuse", "blackhole"]
_POLL = 0.05  # seconds: how quickly the accept loop notices a cut or close
_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `target` until cut.

    Args:
        target: (host, port) of the real service.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()  # both ends of every forwarded pair
        self._held: list[socket.socket] = []  # accepted while blackholed, never answered
        self._mode: Literal["open", "refuse", "blackhole"] = "open"
        self._closed = False
        self.port = 0
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._listen()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connections(self) -> int:
        """Client connections being forwarded now."""
        with self._lock:
            return len(self._connections) // 2

    def cut(self, mode: CutMode = "refuse") -> None:
        """Close every forwarded connection; refuse or blackhole new ones until restore()."""
        with self._lock:
            # From here on, no connection is forwarded, even one accepted just before.
            self._mode = mode
            taken = list(self._connections)
            self._connections.clear()
        if mode == "refuse":
            self._stop_listening()
        self._close_all(taken)

    def restore(self) -> None:
        """Forward new connections again (connections held while blackholed are closed)."""
        with self._lock:
            previous, self._mode = self._mode, "open"
            held, self._held = self._held, []
        self._close_all(held)
        if previous == "refuse":
            self._listen()

    @contextlib.contextmanager
    def outage(self, mode: CutMode = "refuse") -> Iterator[None]:
        """cut() for the duration of the block, then restore()."""
        self.cut(mode)
        try:
            yield
        finally:
            self.restore()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            held, self._held = self._held, []
        self._stop_listening()
        self._close_all([*held, *self._take_connections()])

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Port 0 the first time; afterwards the same port, so the client's URL stays valid.
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(_POLL)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(listener,), name="tcp-proxy-accept", daemon=True
        )
        self._accept_thread.start()

    def _stop_listening(self) -> None:
        listener, thread = self._listener, self._accept_thread
        self._listener = self._accept_thread = None
        if listener is None or thread is None:
            return
        listener.close()
        thread.join(timeout=5)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed: cut("refuse") or close()
                return
            client.settimeout(None)
            with self._lock:
                if self._closed:
                    client.close()
                    return
                if self._mode != "open":
                    self._held.append(client)
                    continue
            self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            forward = self._mode == "open" and not self._closed
            if forward:
                self._connections.update((client, upstream))
        if not forward:  # cut while connecting upstream: the client sees a closed connection
            self._close_all([client, upstream])
            return
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(
                target=self._pump, args=(source, sink), name="tcp-proxy-pump", daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        # One side finished or failed: the pair is done, as a dropped connection would be.
        with self._lock:
            mine = [s for s in (source, sink) if s in self._connections]
            self._connections.difference_update(mine)
        self._close_all(mine)

    def _take_connections(self) -> list[socket.socket]:
        with self._lock:
            taken = list(self._connections)
            self._connections.clear()
        return taken

    @staticmethod
    def _close_all(sockets: list[socket.socket]) -> None:
        for sock in sockets:
            # shutdown() wakes a thread blocked in recv() on it; close() alone would not.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
