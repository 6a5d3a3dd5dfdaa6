"""`luman-server keys rotate` run from a shell whose settings differ from the servers': the
algorithm and the retirement follow the deployment, not the shell (auth/key_ring.py).

Time is the injected clock, shared by the server and the command.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jwt
from click.testing import CliRunner

from luman.server.auth.key_ring import CLOCK_SKEW, RELOAD_INTERVAL
from luman.server.config import Settings
from luman.server.main import cli
from tests.server import test_signing_keys
from tests.server.test_signing_keys import (
    Replica,
    StartReplica,
    _env,
    _kid,
)
from tests.support import FakeClock, get_me, refused_reason, register

TWELVE_HOURS = 12 * 3600
start_replica = test_signing_keys.start_replica  # the fixture: replicas on one database


def _keys(replica: Replica, env: dict[str, str], *args: str) -> Any:
    result = CliRunner().invoke(cli, ["keys", *args], env=env, obj={"clock": replica.clock})
    assert result.exit_code == 0, result.output
    return result


def test_rotate_keeps_the_deployments_algorithm_unless_told(
    start_replica: StartReplica, settings: Settings, tmp_path: Path
) -> None:
    server = start_replica(jwt_algorithm="ES256")
    assert server.keys.signing_key().algorithm == "ES256"
    shell = _env(settings, tmp_path)  # no JWT_ALGORITHM: the shell's default is EdDSA

    rotated = _keys(server, shell, "rotate", "--now")
    assert "(ES256) is published" in rotated.output
    server.clock.advance(seconds=RELOAD_INTERVAL.total_seconds())
    token = register(server.auth).tokens.access_token
    assert jwt.get_unverified_header(token)["alg"] == "ES256"

    _keys(server, shell, "rotate", "--now", "--algorithm", "EdDSA")
    listed = json.loads(_keys(server, shell, "list", "--json").output)
    assert [k["algorithm"] for k in listed] == ["ES256", "ES256", "EdDSA"]


def test_servers_retire_a_key_by_their_own_token_lifetime_not_the_shells(
    start_replica: StartReplica, settings: Settings, tmp_path: Path
) -> None:
    server = start_replica(jwt_expires_in=TWELVE_HOURS)
    old_kid = server.keys.signing_key().kid
    token = register(server.auth).tokens.access_token  # valid for 12 hours
    shell = _env(settings, tmp_path)  # no JWT_EXPIRES_IN: the shell's default is 15 minutes

    _keys(server, shell, "rotate", "--now")
    switched = server.clock()
    server.clock.advance(seconds=RELOAD_INTERVAL.total_seconds())
    assert _kid(register(server.auth).tokens.access_token) != old_kid

    # Hours after the shell's 15-minute margin, the token the old key signed still works.
    server.clock.advance(seconds=TWELVE_HOURS - 3600)
    assert get_me(server.auth, token).user.id
    assert old_kid in [key["kid"] for key in server.keys.published()]

    # `keys list` with the servers' settings shows what they do.
    servers_env = _env(settings, tmp_path, JWT_EXPIRES_IN=str(TWELVE_HOURS))
    listed = json.loads(_keys(server, servers_env, "list", "--json").output)
    retire = switched + RELOAD_INTERVAL + dt.timedelta(seconds=TWELVE_HOURS) + CLOCK_SKEW
    assert listed[0]["retire_time"] == retire.isoformat()

    server.clock.advance(seconds=(retire - server.clock()).total_seconds())
    assert old_kid not in [key["kid"] for key in server.keys.published()]
    assert refused_reason(server.auth, token) in ("TOKEN_EXPIRED", "TOKEN_INVALID")


def test_each_replica_retires_by_its_own_margin(
    start_replica: StartReplica, settings: Settings
) -> None:
    clock = FakeClock()
    long_lived = start_replica(clock, jwt_expires_in=TWELVE_HOURS)
    short_lived = start_replica(clock)  # the 15-minute default
    old_kid = long_lived.keys.signing_key().kid
    long_lived.keys.rotate(immediately=True)
    clock.advance(seconds=3600)
    for replica in (long_lived, short_lived):
        replica.keys.reload()
    assert old_kid in [key["kid"] for key in long_lived.keys.published()]
    assert old_kid not in [key["kid"] for key in short_lived.keys.published()]
