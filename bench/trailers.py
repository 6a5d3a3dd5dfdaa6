"""A second, independent success check: read the grpc-status trailer of one call.

h2load does not show trailers, so before a scenario is measured `nghttp` (from the same Debian
package) sends the very same request body and headers once, and the call must come back with
`grpc-status: 0` and one DATA payload of the expected size. Together with the DATA-byte
equality on every measured run this shows the requests h2load counts are real successes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from bench.h2load import PASSED, GrpcCall, Verdict

_DATA = re.compile(r"recv DATA frame <length=(\d+)")
_STATUS = re.compile(r"recv \(stream_id=\d+\) grpc-status: (\d+)")
_MESSAGE = re.compile(r"recv \(stream_id=\d+\) grpc-message: (.*)")
PROBE_TIMEOUT_SECONDS = 20


def nghttp_path() -> str | None:
    return shutil.which("nghttp")


def probe(call: GrpcCall, *, port: int, workdir: Path) -> Verdict | None:
    """Send `call` once with nghttp and check its trailers; None when nghttp is missing."""
    binary = nghttp_path()
    if binary is None:
        return None
    body = call.write_body(workdir)
    command = [binary, "-v", "-n", "-t", "10", "-d", str(body)]
    for header in call.headers():
        command += ["-H", header]
    command.append(f"http://127.0.0.1:{port}{call.method}")
    try:
        # Fixed arguments built here; nothing comes from a shell.
        result = subprocess.run(  # noqa: S603
            command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        return Verdict(False, "nghttp probe timed out")
    # The verbose output echoes request headers (the bearer token): never pass it on.
    return check_trailers(result.stdout, call)


def check_trailers(output: str, call: GrpcCall) -> Verdict:
    statuses = _STATUS.findall(output)
    if len(statuses) != 1:
        return Verdict(False, f"probe: expected one grpc-status trailer, got {len(statuses)}")
    if statuses[0] != "0":
        message = _MESSAGE.search(output)
        detail = f" ({message.group(1).strip()})" if message else ""
        return Verdict(False, f"probe: grpc-status {statuses[0]}{detail}")
    data = sum(int(n) for n in _DATA.findall(output))
    if data != call.response_frame_bytes:
        return Verdict(False, f"probe: {data} DATA bytes, expected {call.response_frame_bytes}")
    return PASSED
