"""h2load as the load generator for both doors, and the proof that every counted request
succeeded.

gRPC (GrpcCall): h2load speaks HTTP/2, not gRPC: a call that fails with UNAUTHENTICATED is
still an HTTP 200 to it, so its own "succeeded" count proves nothing. A failed unary gRPC call
is answered trailers-only, with no DATA frame, while a successful one carries exactly one
length-prefixed message. So a run is accepted only when the DATA bytes h2load received equal
succeeded * (5 + size of the expected response message); anything else is a FAILED run.

HTTP/JSON (HttpCall): `h2load --h1`, one HTTP/1.1 connection per concurrent client (as
browsers and HTTP client libraries call), each waiting for its answer before the next request.
Any non-2xx status fails the run, and the body bytes must equal succeeded * the expected
response body, as for gRPC. h2load is written in C and costs little on its own core either way.

Runs without h2load's --warm-up-time: h2load counts DATA bytes received during its warm-up but
not the requests, which would break the equality. Warm-up is a separate run instead.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

from bench.stats import percentile

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
GRPC_FRAME_HEADER_BYTES = 5  # compressed flag + 4-byte big-endian length
# Generous: a run ends by itself after its duration; this only catches a wedged h2load.
TIMEOUT_SLACK_SECONDS = 60


class H2loadError(Exception):
    """h2load is missing, crashed, or printed something this module cannot read."""


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message, as the request body h2load posts."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


@dataclasses.dataclass(frozen=True)
class GrpcCall:
    """One unary call, as h2load sends it, with the response a success must carry."""

    name: str
    method: str  # "/package.Service/Method"
    request: bytes  # serialized request message
    expected_response: bytes  # serialized response message of a successful call
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def response_frame_bytes(self) -> int:
        return GRPC_FRAME_HEADER_BYTES + len(self.expected_response)

    def headers(self) -> list[str]:
        return [*GRPC_HEADERS, *(f"{key}: {value}" for key, value in self.metadata)]

    def write_body(self, directory: Path) -> Path:
        path = directory / f"{self.name}.request.bin"
        path.write_bytes(grpc_frame(self.request))
        return path


@dataclasses.dataclass(frozen=True)
class HttpCall:
    """One HTTP/JSON request to the gateway, with the body a success must carry."""

    name: str
    path: str  # "/auth/me"
    expected_response: bytes  # the JSON body of a successful call
    metadata: tuple[tuple[str, str], ...] = ()  # request headers
    body: bytes | None = None  # a JSON body makes it a POST; without one it is a GET

    @property
    def response_frame_bytes(self) -> int:
        return len(self.expected_response)

    def headers(self) -> list[str]:
        json_type = ["content-type: application/json"] if self.body is not None else []
        return [*json_type, *(f"{key}: {value}" for key, value in self.metadata)]

    def write_body(self, directory: Path) -> Path | None:
        if self.body is None:
            return None
        path = directory / f"{self.name}.request.json"
        path.write_bytes(self.body)
        return path


Call = GrpcCall | HttpCall


def load_for(call: Call, concurrency: int, *, duration: int, connections: int = 1) -> Load:
    """`concurrency` calls in flight: streams on one HTTP/2 connection for gRPC (as a gRPC
    client multiplexes; or spread over `connections`), one HTTP/1.1 connection each for HTTP."""
    if isinstance(call, HttpCall):
        return Load(1, clients=concurrency, duration=duration)
    return Load(max(1, concurrency // connections), clients=connections, duration=duration)


@dataclasses.dataclass(frozen=True)
class Load:
    """How hard to push: `streams` concurrent streams on each of `clients` connections, for
    `duration` seconds or for exactly `requests` requests."""

    streams: int
    clients: int = 1
    duration: int | None = None
    requests: int | None = None

    def __post_init__(self) -> None:
        if (self.duration is None) == (self.requests is None):
            raise ValueError("give exactly one of duration and requests")
        # h2load rejects fractional -D values and runs nothing for sub-second ones.
        if self.duration is not None and self.duration < 1:
            raise ValueError("duration is whole seconds, at least 1")

    def args(self) -> list[str]:
        args = ["-c", str(self.clients), "-m", str(self.streams), "-t", "1"]
        if self.duration is not None:
            return [*args, "-D", str(self.duration)]
        return [*args, "-n", str(self.requests)]


@dataclasses.dataclass(frozen=True)
class Summary:
    """What h2load printed at the end of a run."""

    requests: int
    started: int
    done: int
    succeeded: int
    failed: int
    errored: int
    timeout: int
    status_2xx: int
    data_bytes: int
    req_per_s: float


_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx")
_TRAFFIC = re.compile(r"traffic: .*?, .*?\((\d+)\) data")
_FINISHED = re.compile(r"finished in [^,]+, ([\d.]+) req/s")


def parse_summary(output: str) -> Summary:
    """Parse h2load's summary.

    Raises:
        H2loadError: a line is missing (h2load failed before it measured anything).
    """
    found = {}
    for name, pattern in (
        ("requests", _REQUESTS),
        ("status", _STATUS),
        ("traffic", _TRAFFIC),
        ("finished", _FINISHED),
    ):
        match = pattern.search(output)
        if match is None:
            raise H2loadError(f"h2load printed no {name!r} line")
        found[name] = match
    counts = [int(g) for g in found["requests"].groups()]
    return Summary(
        requests=counts[0],
        started=counts[1],
        done=counts[2],
        succeeded=counts[3],
        failed=counts[4],
        errored=counts[5],
        timeout=counts[6],
        status_2xx=int(found["status"].group(1)),
        data_bytes=int(found["traffic"].group(1)),
        req_per_s=float(found["finished"].group(1)),
    )


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""


PASSED = Verdict(True)


def verify(summary: Summary, call: Call, in_flight: int = 0) -> Verdict:
    """Accept a run only if every request h2load counted carried a full response.
    `in_flight`: the most requests the load had in flight at once."""
    # h2load counts HTTP statuses of 400 and above as failed requests.
    if summary.failed or summary.errored or summary.timeout:
        return Verdict(
            False,
            f"h2load: {summary.failed} failed, {summary.errored} errored, "
            f"{summary.timeout} timed out",
        )
    if summary.succeeded == 0:
        return Verdict(False, "no request completed")
    if summary.status_2xx != summary.succeeded:
        return Verdict(False, f"{summary.succeeded - summary.status_2xx} non-2xx HTTP statuses")
    expected = summary.succeeded * call.response_frame_bytes
    if isinstance(call, HttpCall) and summary.data_bytes > expected:
        # `h2load --h1 -D` counts the bytes of responses that arrive after the run's time is
        # up but not the requests (seen here: exactly one body per connection too many).
        # Whole bodies, at most one per request then in flight, are those; anything else not.
        extra, remainder = divmod(summary.data_bytes - expected, call.response_frame_bytes)
        if remainder == 0 and extra <= in_flight:
            return PASSED
    if summary.data_bytes != expected:
        missing = (expected - summary.data_bytes) / call.response_frame_bytes
        return Verdict(
            False,
            f"DATA bytes {summary.data_bytes} != {summary.succeeded} * "
            f"{call.response_frame_bytes}: about {missing:.0f} calls without the expected "
            "response",
        )
    return PASSED


@dataclasses.dataclass(frozen=True)
class Latency:
    p50_ms: float
    p99_ms: float
    samples: int


def read_latency_log(path: Path) -> Latency | None:
    """p50/p99 from h2load's --log-file (start µs, HTTP status, µs to end of response)."""
    micros: list[float] = []
    for line in path.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] != "-1":
            micros.append(float(fields[2]))
    if not micros:
        return None
    micros.sort()
    return Latency(
        p50_ms=percentile(micros, 50) / 1000,
        p99_ms=percentile(micros, 99) / 1000,
        samples=len(micros),
    )


@dataclasses.dataclass(frozen=True)
class Run:
    """One verified h2load run."""

    call: Call
    load: Load
    summary: Summary | None
    verdict: Verdict
    latency: Latency | None
    command: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.summary is not None


def h2load_path() -> str | None:
    return shutil.which("h2load")


class Started:
    """An h2load process in flight; `finish()` waits for it and verifies the run."""

    def __init__(
        self, call: Call, load: Load, command: list[str], log_path: Path, timeout: float
    ) -> None:
        self._call = call
        self._load = load
        self._command = command
        self._log_path = log_path
        self._timeout = timeout
        # The command is built from fixed arguments and paths this module chose.
        self._process = subprocess.Popen(  # noqa: S603
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def finish(self) -> Run:
        try:
            output, _ = self._process.communicate(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()
            return self._run(None, Verdict(False, f"h2load ran over {self._timeout:.0f} s"))
        finally:
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
        try:
            summary = parse_summary(output)
        except H2loadError as exc:
            tail = " | ".join(output.strip().splitlines()[-3:])
            return self._run(
                None, Verdict(False, f"{exc} (exit {self._process.returncode}: {tail})")
            )
        verdict = verify(summary, self._call, self._load.clients * self._load.streams)
        return self._run(summary, verdict)

    def _run(self, summary: Summary | None, verdict: Verdict) -> Run:
        latency = read_latency_log(self._log_path) if self._log_path.exists() else None
        return Run(self._call, self._load, summary, verdict, latency, tuple(self._command))


def start(
    call: Call,
    load: Load,
    *,
    port: int,
    workdir: Path,
    pin: tuple[str, ...] = (),
    tag: str = "",
    timeout: float | None = None,
) -> Started:
    """Start h2load against 127.0.0.1:`port`; `pin` prefixes the command (taskset).

    `timeout` bounds a run by request count (default: the duration plus a minute).
    """
    binary = h2load_path()
    if binary is None:
        raise H2loadError("h2load not found: install Debian's nghttp2-client")
    body = call.write_body(workdir)
    log_path = workdir / f"{call.name}{tag}.h2load.log"
    log_path.unlink(missing_ok=True)  # h2load appends to an existing log file
    command = [*pin, binary, *load.args(), f"--log-file={log_path}"]
    if body is not None:
        command += ["-d", str(body)]
    for header in call.headers():
        command += ["-H", header]
    if isinstance(call, HttpCall):
        command += ["--h1", f"http://127.0.0.1:{port}{call.path}"]
    else:
        command.append(f"http://127.0.0.1:{port}{call.method}")
    if timeout is None:
        timeout = (load.duration or 0) + TIMEOUT_SLACK_SECONDS
    return Started(call, load, command, log_path, timeout)


def run(
    call: Call,
    load: Load,
    *,
    port: int,
    workdir: Path,
    pin: tuple[str, ...] = (),
) -> Run:
    return start(call, load, port=port, workdir=workdir, pin=pin).finish()
