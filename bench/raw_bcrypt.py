"""Raw bcrypt throughput: `threads` threads checking one password at `rounds`, for `seconds`.

The ceiling for Login, which spends one bcrypt check per call. The harness runs this module
pinned to the server's CPU, with as many threads as the server hashes on at once, so both
figures come from the same cores. bcrypt releases the GIL while hashing.

Prints one JSON object: {"hashes": n, "seconds": s, "per_second": n / s}.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt

PASSWORD = b"bench password 1234"


def measure(rounds: int, threads: int, seconds: float) -> dict[str, float]:
    hashed = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds))
    start = threading.Event()
    deadline = [0.0]

    def worker() -> int:
        start.wait()
        count = 0
        while time.monotonic() < deadline[0]:
            if not bcrypt.checkpw(PASSWORD, hashed):
                raise RuntimeError("bcrypt check failed")
            count += 1
        return count

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(worker) for _ in range(threads)]
        began = time.monotonic()
        deadline[0] = began + seconds
        start.set()
        hashes = sum(f.result() for f in futures)
        elapsed = time.monotonic() - began
    return {"hashes": hashes, "seconds": elapsed, "per_second": hashes / elapsed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_bcrypt")
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(measure(args.rounds, args.threads, args.seconds)) + "\n")


if __name__ == "__main__":
    main()
