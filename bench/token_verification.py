"""What one full access-token check costs, per signing algorithm (issue 15: "report EdDSA
verification cost per call").

A full check is the product's own `TokenCodec.verify` on a token it issued, with a key its own
`KeyRing` made in a scratch SQLite database: the kid lookup, the signature, the claims. It runs
in the harness's process, single-threaded, best of several rounds (the least disturbed).

The verified-token cache (server/luman/server/auth/token_cache.py) means a server checks a
token in full once per TOKEN_CACHE_TTL, not on every call, so this cost is paid by the first
call of each token (and of each cache recheck), not by the GetMe series, where it is amortised
over thousands of calls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
import uuid
from pathlib import Path

from luman.server.auth.key_ring import KeyRing
from luman.server.auth.tokens import TokenCodec
from luman.server.config import Settings
from luman.server.db import migrate
from luman.server.db.session import make_engine, make_sessions

ALGORITHMS = ("EdDSA", "ES256", "HS256")
CHECKS_PER_ROUND = 2_000
ROUNDS = 5


@dataclasses.dataclass(frozen=True)
class VerificationCost:
    algorithm: str
    microseconds: float  # per full check, the best round
    token_bytes: int


def measure(
    workdir: Path, *, checks: int = CHECKS_PER_ROUND, rounds: int = ROUNDS
) -> list[VerificationCost]:
    """The cost of one full check for each of ALGORITHMS."""
    return [_measure(algorithm, workdir, checks, rounds) for algorithm in ALGORITHMS]


def _measure(algorithm: str, workdir: Path, checks: int, rounds: int) -> VerificationCost:
    path = workdir / f"verification-{algorithm}.db"
    settings = Settings.from_env(
        {
            "LUMAN_ENV": "test",
            "DATABASE_URL": f"sqlite:///{path}",
            "LUMAN_DATA_DIR": str(workdir / "verification-data"),
            "JWT_ALGORITHM": algorithm,
            "JWT_SECRET": secrets.token_urlsafe(48),
            "JWT_REFRESH_SECRET": secrets.token_urlsafe(48),
            "SIGNING_KEY_SECRET": secrets.token_urlsafe(48),
        }
    )
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        migrate.upgrade(engine)

        def clock() -> dt.datetime:
            return dt.datetime.now(dt.UTC)

        keys = None
        if algorithm != "HS256":
            keys = KeyRing.from_settings(settings, make_sessions(engine), clock)
            keys.start()
        codec = TokenCodec(settings, clock, keys)
        token = codec.issue("access", uuid.uuid4(), uuid.uuid4()).token
        codec.verify("access", token)  # loads what the first check loads
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(checks):
                codec.verify("access", token)
            best = min(best, (time.perf_counter() - started) / checks)
        return VerificationCost(algorithm, best * 1e6, len(token))
    finally:
        engine.dispose()
