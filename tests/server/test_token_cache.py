"""The verified-token cache (tokens and the user each one was read with), through real servers
on SQLite and PostgreSQL, and on its own.

A cache hit is made visible by changing the database behind the cache's back (as another
replica would): a call that still succeeds was answered from the cache. Time moves only through
the FakeClock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Iterator

import grpc
import pytest
import sqlalchemy as sa

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.principal import Credential, Principal
from luman.server.app import App, build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.auth.token_cache import TokenCache, token_key
from luman.server.auth.token_checks import UserRecord
from luman.server.config import Settings
from luman.server.db.models import CliToken, LoginSession, User
from luman.server.db.session import Sessions
from tests.support import (
    PASSWORD,
    FakeClock,
    bearer,
    get_me,
    refused_reason,
    register,
    rich_error,
    unique_email,
)

Stub = auth_service_pb2_grpc.AuthServiceStub


@dataclasses.dataclass
class Replica:
    app: App
    auth: Stub

    @property
    def cache(self) -> TokenCache:
        return self.app.auth.token_cache


StartReplica = Callable[..., Replica]


@pytest.fixture
def start_replica(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[StartReplica]:
    """Start servers on the shared test database, with settings changed as asked."""
    with contextlib.ExitStack() as stack:

        def start(
            *,
            token_cache_ttl: float,
            token_cache_max_entries: int = settings.token_cache_max_entries,
            jwt_expires_in: float = settings.jwt_expires_in,
        ) -> Replica:
            changed = dataclasses.replace(
                settings,
                token_cache_ttl=token_cache_ttl,
                token_cache_max_entries=token_cache_max_entries,
                jwt_expires_in=jwt_expires_in,
            )
            app = build_server(changed, sessions, clock=clock, hasher=hasher)
            app.start()
            stack.callback(app.stop, None)
            channel = stack.enter_context(grpc.insecure_channel(f"127.0.0.1:{app.port}"))
            return Replica(app, auth_service_pb2_grpc.AuthServiceStub(channel))

        yield start


def _revoke_everything_in_the_database(sessions: Sessions, when: dt.datetime) -> None:
    """Revoke every sign-in and CLI token behind the server's back, as another replica would."""
    with sessions.write.begin() as session:
        session.execute(sa.update(LoginSession).values(revoke_time=when))
        session.execute(sa.update(CliToken).values(revoke_time=when))


def _cli_token(auth: Stub, email: str) -> str:
    response = auth.CliLogin(auth_service_pb2.CliLoginRequest(email=email, password=PASSWORD))
    return response.token


def _last_use(sessions: Sessions) -> dt.datetime | None:
    with sessions.read() as session:
        return session.scalars(sa.select(CliToken.last_use_time)).one()


# --- Through the server -----------------------------------------------------------------------


def test_cache_hit_still_refuses_an_expired_access_token(
    start_replica: StartReplica, sessions: Sessions, clock: FakeClock
) -> None:
    # The TTL outlives the token: only the expiry check on the hit can refuse it.
    replica = start_replica(jwt_expires_in=60, token_cache_ttl=3600)
    signed_up = register(replica.auth)
    token = signed_up.tokens.access_token
    assert get_me(replica.auth, token).user == signed_up.user
    _revoke_everything_in_the_database(sessions, clock())

    clock.advance(seconds=59)
    assert get_me(replica.auth, token).user == signed_up.user  # from the cache
    clock.advance(seconds=1)
    assert refused_reason(replica.auth, token) == "TOKEN_EXPIRED"
    assert len(replica.cache) == 0


def test_cli_logout_refuses_the_cached_token_on_the_very_next_call(
    start_replica: StartReplica,
) -> None:
    replica = start_replica(token_cache_ttl=3600)
    email = unique_email()
    register(replica.auth, email=email)
    token, other = _cli_token(replica.auth, email), _cli_token(replica.auth, email)
    get_me(replica.auth, token)
    get_me(replica.auth, other)
    assert len(replica.cache) == 2

    replica.auth.CliLogout(auth_service_pb2.CliLogoutRequest(), metadata=bearer(token))

    assert refused_reason(replica.auth, token) == "TOKEN_REVOKED"
    assert get_me(replica.auth, other).user.email == email  # only that token
    assert len(replica.cache) == 1


def test_refresh_token_reuse_refuses_the_sessions_cached_access_tokens_at_once(
    start_replica: StartReplica, clock: FakeClock
) -> None:
    replica = start_replica(token_cache_ttl=3600)
    email = unique_email()
    first = register(replica.auth, email=email).tokens
    other = replica.auth.Login(auth_service_pb2.LoginRequest(email=email, password=PASSWORD))
    second = replica.auth.RefreshToken(
        auth_service_pb2.RefreshTokenRequest(refresh_token=first.refresh_token)
    ).tokens
    for token in (first.access_token, second.access_token, other.tokens.access_token):
        get_me(replica.auth, token)
    assert len(replica.cache) == 3

    clock.advance(seconds=10)  # past REFRESH_REUSE_GRACE_SECONDS
    with pytest.raises(grpc.RpcError) as caught:
        replica.auth.RefreshToken(
            auth_service_pb2.RefreshTokenRequest(refresh_token=first.refresh_token)
        )
    assert rich_error(caught.value).reason == "REFRESH_TOKEN_REUSED"

    # No clock movement: both access tokens of the revoked sign-in fail on their next call.
    assert refused_reason(replica.auth, first.access_token) == "TOKEN_REVOKED"
    assert refused_reason(replica.auth, second.access_token) == "TOKEN_REVOKED"
    assert get_me(replica.auth, other.tokens.access_token).user.email == email
    assert len(replica.cache) == 1


def test_another_replica_whose_invalidation_channel_is_down_notices_a_revocation_within_the_ttl(
    start_replica: StartReplica, clock: FakeClock
) -> None:
    # With the channel up it notices at once: tests/server/test_revocation_channel.py.
    here = start_replica(token_cache_ttl=30)
    there = start_replica(token_cache_ttl=30)
    assert there.app.invalidations is not None
    there.app.invalidations.close()
    email = unique_email()
    register(here.auth, email=email)
    token = _cli_token(here.auth, email)
    get_me(there.auth, token)  # cached there

    here.auth.CliLogout(auth_service_pb2.CliLogoutRequest(), metadata=bearer(token))

    assert refused_reason(here.auth, token) == "TOKEN_REVOKED"
    clock.advance(seconds=29)
    assert get_me(there.auth, token).user.email == email  # the documented window
    clock.advance(seconds=1)
    assert refused_reason(there.auth, token) == "TOKEN_REVOKED"


def test_cache_holds_at_most_max_entries_and_evicted_tokens_still_work(
    start_replica: StartReplica,
) -> None:
    replica = start_replica(token_cache_ttl=3600, token_cache_max_entries=3)
    email = unique_email()
    register(replica.auth, email=email)
    tokens = [_cli_token(replica.auth, email) for _ in range(6)]
    for token in tokens:
        get_me(replica.auth, token)
        assert len(replica.cache) <= 3
    assert len(replica.cache) == 3
    for token in tokens:  # the evicted ones are checked in full again
        assert get_me(replica.auth, token).user.email == email
    assert len(replica.cache) == 3


def test_disabled_cache_checks_the_database_on_every_call(
    start_replica: StartReplica, sessions: Sessions, clock: FakeClock
) -> None:
    replica = start_replica(token_cache_ttl=0)
    email = unique_email()
    signed_up = register(replica.auth, email=email)
    cli = _cli_token(replica.auth, email)
    for token in (signed_up.tokens.access_token, cli):
        assert get_me(replica.auth, token).user == signed_up.user
    assert not replica.cache.enabled
    assert len(replica.cache) == 0

    _revoke_everything_in_the_database(sessions, clock())

    assert refused_reason(replica.auth, signed_up.tokens.access_token) == "TOKEN_REVOKED"
    assert refused_reason(replica.auth, cli) == "TOKEN_REVOKED"


def test_cached_cli_token_still_records_its_last_use_to_the_minute(
    start_replica: StartReplica, sessions: Sessions, clock: FakeClock
) -> None:
    replica = start_replica(token_cache_ttl=3600)
    email = unique_email()
    register(replica.auth, email=email)
    token = _cli_token(replica.auth, email)
    start = clock()
    get_me(replica.auth, token)
    assert _last_use(sessions) == start

    clock.advance(seconds=59)
    get_me(replica.auth, token)
    assert _last_use(sessions) == start  # not rewritten on every call

    clock.advance(seconds=1)
    get_me(replica.auth, token)
    assert _last_use(sessions) == start + dt.timedelta(minutes=1)
    get_me(replica.auth, token)
    assert _last_use(sessions) == start + dt.timedelta(minutes=1)


def test_get_me_is_answered_for_a_token_checked_before_the_cache_filled(
    start_replica: StartReplica,
) -> None:
    # GetMe after a full check reads the user from that check; the answer is the stored user.
    replica = start_replica(token_cache_ttl=0)
    signed_up = register(replica.auth)
    for _ in range(2):
        assert get_me(replica.auth, signed_up.tokens.access_token).user == signed_up.user


def test_get_me_answers_from_the_user_the_token_check_read_until_the_recheck(
    start_replica: StartReplica, sessions: Sessions, clock: FakeClock
) -> None:
    # Another replica renaming the user is noticed here when the token comes up for a recheck.
    replica = start_replica(token_cache_ttl=30)
    signed_up = register(replica.auth, name="Before")
    token = signed_up.tokens.access_token
    assert get_me(replica.auth, token).user.name == "Before"
    with sessions.write.begin() as session:
        session.execute(sa.update(User).values(name="After"))

    clock.advance(seconds=29)
    assert get_me(replica.auth, token).user.name == "Before"  # from the cache
    clock.advance(seconds=1)
    assert get_me(replica.auth, token).user.name == "After"


# --- TokenCache on its own ---------------------------------------------------------------------


def _principal(
    credential_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None
) -> Principal:
    return Principal(
        user_id or uuid.uuid4(), Credential.ACCESS_TOKEN, credential_id or uuid.uuid4()
    )


def _user(principal: Principal, name: str = "Test User") -> UserRecord:
    return UserRecord(
        principal.user_id,
        f"{principal.user_id.hex[:10]}@example.com",
        name,
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


def _put(
    cache: TokenCache,
    key: bytes,
    principal: Principal | None = None,
    *,
    expire_time: dt.datetime | None = None,
    name: str = "Test User",
) -> Principal:
    """Cache a verification of `key` that began just now; its principal."""
    principal = principal or _principal()
    cache.put(
        key,
        principal,
        _user(principal, name),
        expire_time=expire_time,
        generation=cache.generation(),
    )
    return principal


def test_cache_is_keyed_by_a_hash_of_the_token() -> None:
    assert token_key("secret-token") != b"secret-token"
    assert len(token_key("secret-token")) == 32
    assert token_key("secret-token") == token_key("secret-token")


def test_entry_is_rechecked_at_the_earlier_of_expiry_and_ttl(clock: FakeClock) -> None:
    cache = TokenCache(30, clock)
    soon, later = token_key("soon"), token_key("later")
    _put(cache, soon, expire_time=clock() + dt.timedelta(seconds=10))
    _put(cache, later)
    clock.advance(seconds=9)
    assert cache.get(soon) is not None
    clock.advance(seconds=1)
    assert cache.get(soon) is None
    clock.advance(seconds=19)
    assert cache.get(later) is not None
    clock.advance(seconds=1)
    assert cache.get(later) is None
    assert len(cache) == 0


def test_an_already_expired_token_is_not_cached(clock: FakeClock) -> None:
    cache = TokenCache(30, clock)
    key = token_key("t")
    _put(cache, key, expire_time=clock())
    assert cache.get(key) is None


def test_a_check_that_raced_a_revocation_is_not_cached(clock: FakeClock) -> None:
    cache = TokenCache(30, clock)
    session_id = uuid.uuid4()
    generation = cache.generation()  # a check begins and reads the database ...
    cache.forget(credential_id=session_id)  # ... a revocation commits meanwhile ...
    key = token_key("t")
    principal = _principal(session_id)
    cache.put(key, principal, _user(principal), expire_time=None, generation=generation)
    assert cache.get(key) is None  # ... so what the check read is not believed later
    assert cache.user(principal.user_id) is None


def test_a_check_that_raced_a_change_of_its_user_is_not_cached(clock: FakeClock) -> None:
    cache = TokenCache(30, clock)
    principal = _principal()
    generation = cache.generation()  # a check begins and reads the user ...
    cache.forget(user_id=principal.user_id)  # ... the user changes meanwhile ...
    key = token_key("t")
    cache.put(key, principal, _user(principal), expire_time=None, generation=generation)
    assert cache.get(key) is None  # ... so what the check read is not believed later
    assert cache.user(principal.user_id) is None


def test_forget_by_credential_drops_only_that_credentials_tokens(clock: FakeClock) -> None:
    cache = TokenCache(30, clock)
    session_id, user_id = uuid.uuid4(), uuid.uuid4()
    mine = [token_key(f"mine-{i}") for i in range(3)]
    for key in mine:
        _put(cache, key, _principal(session_id, user_id))
    same_user = _put(cache, token_key("same user"), _principal(user_id=user_id))
    theirs = _put(cache, token_key("theirs"))
    cache.forget(credential_id=session_id)
    assert [cache.get(key) for key in mine] == [None, None, None]
    assert cache.get(token_key("same user")) is not None
    assert cache.get(token_key("theirs")) is not None
    assert cache.user(same_user.user_id) == _user(same_user)
    assert cache.user(theirs.user_id) == _user(theirs)


def test_forget_by_user_drops_every_token_of_that_user_only(clock: FakeClock) -> None:
    # A changed or deleted user: every credential of theirs is checked in full again.
    cache = TokenCache(30, clock)
    user_id = uuid.uuid4()
    mine = [token_key(f"mine-{i}") for i in range(3)]
    for key in mine:  # three credentials of one user
        _put(cache, key, _principal(user_id=user_id))
    theirs = _put(cache, token_key("theirs"))
    cache.forget(user_id=user_id)
    assert [cache.get(key) for key in mine] == [None, None, None]
    assert cache.user(user_id) is None
    assert cache.get(token_key("theirs")) is not None
    assert cache.user(theirs.user_id) == _user(theirs)
    assert len(cache) == 1


def test_forget_by_credential_and_user_at_once(clock: FakeClock) -> None:
    cache = TokenCache(30, clock)
    revoked = _put(cache, token_key("revoked"))
    changed = _put(cache, token_key("changed"))
    kept = _put(cache, token_key("kept"))
    cache.forget(credential_id=revoked.credential_id, user_id=changed.user_id)
    assert cache.get(token_key("revoked")) is None
    assert cache.get(token_key("changed")) is None
    assert cache.get(token_key("kept")) is not None
    assert [cache.user(p.user_id) for p in (revoked, changed, kept)] == [None, None, _user(kept)]


def test_user_is_the_record_read_with_a_cached_token(clock: FakeClock) -> None:
    cache = TokenCache(30, clock)
    assert cache.user(uuid.uuid4()) is None
    principal = _put(cache, token_key("t"), name="Ada")
    cached = cache.get(token_key("t"))
    assert cached is not None
    assert cached.principal == principal
    assert cached.user == _user(principal, "Ada")
    assert cache.user(principal.user_id) == _user(principal, "Ada")


def test_user_goes_with_the_last_of_its_tokens(clock: FakeClock) -> None:
    cache = TokenCache(30, clock, max_entries=2)
    principal = _put(cache, token_key("old"))
    _put(cache, token_key("a"))
    _put(cache, token_key("b"))  # evicts "old", the user's only token
    assert cache.get(token_key("old")) is None
    assert cache.user(principal.user_id) is None


def test_user_is_not_served_past_the_recheck_of_the_token_it_came_with(clock: FakeClock) -> None:
    cache = TokenCache(30, clock)
    principal = _put(cache, token_key("t"), name="Before")
    clock.advance(seconds=30)  # the token is due for a full check: so is what it read
    assert cache.user(principal.user_id) is None


def test_eviction_keeps_the_most_recently_used(clock: FakeClock) -> None:
    cache = TokenCache(30, clock, max_entries=2)
    a, b, c = (token_key(name) for name in "abc")
    for key in (a, b):
        _put(cache, key)
    assert cache.get(a) is not None  # a is now the most recent
    _put(cache, c)
    assert cache.get(b) is None
    assert cache.get(a) is not None
    assert cache.get(c) is not None


def test_zero_ttl_caches_nothing(clock: FakeClock) -> None:
    cache = TokenCache(0, clock)
    key = token_key("t")
    principal = _put(cache, key)
    assert cache.get(key) is None
    assert cache.user(principal.user_id) is None
    assert len(cache) == 0


def test_claim_use_lets_one_caller_record_each_minute(clock: FakeClock) -> None:
    cache = TokenCache(3600, clock)
    key = token_key("lmn_x")
    minute = dt.timedelta(minutes=1)
    principal = _principal()
    cache.put(
        key,
        principal,
        _user(principal),
        expire_time=None,
        generation=cache.generation(),
        last_use_time=clock(),
    )
    assert not cache.claim_use(key, clock(), minute)
    clock.advance(seconds=60)
    assert cache.claim_use(key, clock(), minute)
    assert not cache.claim_use(key, clock(), minute)  # the second caller in that minute
    cached = cache.get(key)
    assert cached is not None
    assert cached.last_use_time == clock()
    assert not cache.claim_use(token_key("not cached"), clock(), minute)
