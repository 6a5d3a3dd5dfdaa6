"""Managed personal (CLI) tokens through the real stack: format and checksum, create, list,
revoke, revoke all, expiry, last use (time and address), and every bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.client import token_format
from luman.server.app import App, build_server
from luman.server.auth.cli_tokens import hash_secret
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.models import CliToken
from luman.server.db.session import Sessions
from tests.support import PASSWORD, FakeClock, RichError, bearer, register, rich_error, unique_email

Stub = auth_service_pb2_grpc.AuthServiceStub
GET_ME = auth_service_pb2.GetMeRequest()


@dataclasses.dataclass(frozen=True)
class Owner:
    email: str
    user_id: str
    access: str  # an access token from Register: every scope


def _owner(auth: Stub) -> Owner:
    email = unique_email()
    response = register(auth, email=email)
    return Owner(email, response.user.id, response.tokens.access_token)


def _create(
    auth: Stub,
    credential: str,
    name: str = "ci",
    scopes: tuple[str, ...] = (),
    **expiration: Any,
) -> auth_service_pb2.CreateCliTokenResponse:
    response: auth_service_pb2.CreateCliTokenResponse = auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name=name, scopes=list(scopes), **expiration),
        metadata=bearer(credential),
    )
    return response


def _list(auth: Stub, credential: str, **page: Any) -> auth_service_pb2.ListCliTokensResponse:
    response: auth_service_pb2.ListCliTokensResponse = auth.ListCliTokens(
        auth_service_pb2.ListCliTokensRequest(**page), metadata=bearer(credential)
    )
    return response


def _error(call: Any, request: object, credential: str | None) -> RichError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=bearer(credential) if credential else None)
    return rich_error(caught.value)


def _error_metadata(call: Any, request: object, credential: str) -> dict[str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, metadata=bearer(credential))
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return dict(info.metadata)
    raise AssertionError("no ErrorInfo")


def _row(sessions: Sessions, token_id: str) -> CliToken:
    with sessions.read() as session:
        row = session.get(CliToken, uuid.UUID(token_id))
        assert row is not None
        return row


@pytest.fixture
def queries(sessions: Sessions) -> Iterator[list[str]]:
    """Every SQL statement the server runs while the test watches."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    sa.event.listen(sessions.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(sessions.engine, "before_cursor_execute", record)


# --- format and checksum ---


def test_new_tokens_carry_a_checksum_a_scanner_verifies_offline() -> None:
    token = token_format.new_token()
    assert len(token) == token_format.TOKEN_LENGTH == 53
    assert token.startswith("lmn_")
    assert token_format.verify_checksum(token)
    random_part = token[4:47]
    assert token[47:] == token_format.checksum(random_part)
    assert token_format.new_token() != token


def test_checksum_is_crc32_in_fixed_width_base62() -> None:
    # The README's worked example, for scanners implementing it: crc32 = 0xAA866F5C.
    example = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg"
    assert _crc(example) == 0xAA866F5C
    assert token_format.checksum(example) == "37cCQ0" == _base62(0xAA866F5C).rjust(6, "0")
    assert token_format.verify_checksum("lmn_" + example + "37cCQ0")
    assert token_format.checksum("a" * 43) == _base62(_crc("a" * 43)).rjust(6, "0")
    assert token_format.checksum("") == "000000"  # crc32 of nothing is 0: padded to width


def _crc(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


def _base62(value: int) -> str:
    digits = ""
    while value:
        value, digit = divmod(value, 62)
        digits = token_format.ALPHABET[digit] + digits
    return digits


@pytest.mark.parametrize("position", [4, 20, 46, 47, 52])
def test_one_changed_character_fails_the_checksum(position: int) -> None:
    token = token_format.new_token()
    replacement = "A" if token[position] != "A" else "B"
    altered = token[:position] + replacement + token[position + 1 :]
    assert not token_format.verify_checksum(altered)


def test_checksum_rejects_other_shapes() -> None:
    token = token_format.new_token()
    for candidate in (
        "",
        "lmn_",
        token[:-1],
        token + "0",
        "xyz_" + token[4:],
        token[:10] + "-" + token[11:],
    ):
        assert not token_format.verify_checksum(candidate)
    legacy = "lmn_" + "A-_" * 14 + "z"
    assert token_format.is_legacy_token(legacy)
    assert not token_format.verify_checksum(legacy)


def test_a_token_with_a_bad_checksum_is_refused_before_any_database_work(
    auth: Stub, queries: list[str]
) -> None:
    owner = _owner(auth)
    token = _create(auth, owner.access).token
    altered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    for candidate in (altered, token[:-1], token + "x", "lmn_short"):
        queries.clear()
        error = _error(auth.GetMe, GET_ME, candidate)
        assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
        assert not [q for q in queries if "cli_tokens" in q]
    # The real one is looked up (and works).
    queries.clear()
    auth.GetMe(GET_ME, metadata=bearer(token))
    assert [q for q in queries if "cli_tokens" in q]


def test_a_legacy_token_still_works_as_read_and_write_without_expiry(
    auth: Stub, sessions: Sessions, clock: FakeClock, queries: list[str]
) -> None:
    owner = _owner(auth)
    # Stored as a token issued before migration 0006 was: only the columns 0001 knew, so the
    # new ones take their defaults.
    legacy = "lmn_" + token_format.new_token()[4:47].replace("a", "-").replace("b", "_")
    assert token_format.is_legacy_token(legacy)
    token_id = uuid.uuid4()
    with sessions.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO cli_tokens (id, user_id, name, token_hash, create_time) "
                "VALUES (:id, :user_id, 'old laptop', :hash, :now)"
            ),
            {
                "id": token_id.hex if sessions.engine.dialect.name == "sqlite" else token_id,
                "user_id": (
                    uuid.UUID(owner.user_id).hex
                    if sessions.engine.dialect.name == "sqlite"
                    else uuid.UUID(owner.user_id)
                ),
                "hash": hash_secret(legacy),
                "now": clock(),
            },
        )
    queries.clear()
    assert auth.GetMe(GET_ME, metadata=bearer(legacy)).user.email == owner.email
    assert [q for q in queries if "cli_tokens" in q]  # looked up, not refused on its shape
    clock.advance(days=3650)
    # write: it can still create a token, and it never expires
    created = _create(auth, legacy, scopes=("read", "write"))
    listed = {t.id: t for t in _list(auth, created.token).cli_tokens}
    old = listed[str(token_id)]
    assert list(old.scopes) == ["read", "write"]
    assert not old.HasField("expire_time")
    assert old.hint == "lmn_"  # only its hash was ever kept


# --- create ---


def test_create_returns_the_secret_once_and_stores_only_its_hash(
    auth: Stub, sessions: Sessions, clock: FakeClock
) -> None:
    owner = _owner(auth)
    created = _create(
        auth,
        owner.access,
        name=" deploy bot ",
        scopes=("read",),
        ttl=duration_pb2.Duration(seconds=3600),
    )
    assert token_format.verify_checksum(created.token)
    info = created.cli_token
    assert info.name == "deploy bot"
    assert list(info.scopes) == ["read"]
    assert info.expire_time.ToDatetime(dt.UTC) == clock() + dt.timedelta(hours=1)
    assert info.create_time.ToDatetime(dt.UTC) == clock()
    assert info.hint == "lmn_..." + created.token[-4:]
    row = _row(sessions, info.id)
    assert row.token_hash == hash_secret(created.token)
    assert created.token[4:47] not in repr(vars(row))
    # Listing never shows it again.
    listed = _list(auth, owner.access)
    assert created.token not in str(listed)
    assert [t.id for t in listed.cli_tokens] == [info.id]


def test_create_defaults_to_read_and_write_and_no_expiry(auth: Stub) -> None:
    info = _create(auth, _owner(auth).access).cli_token
    assert list(info.scopes) == ["read", "write"]
    assert not info.HasField("expire_time")


def test_create_with_an_expire_time(auth: Stub, clock: FakeClock) -> None:
    when = clock() + dt.timedelta(days=2)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    info = _create(auth, _owner(auth).access, expire_time=stamp).cli_token
    assert info.expire_time.ToDatetime(dt.UTC) == when


def test_cli_login_issues_the_new_format_with_read_and_write(auth: Stub) -> None:
    owner = _owner(auth)
    response = auth.CliLogin(auth_service_pb2.CliLoginRequest(email=owner.email, password=PASSWORD))
    assert token_format.verify_checksum(response.token)
    assert list(response.cli_token.scopes) == ["read", "write"]
    assert not response.cli_token.HasField("expire_time")


def test_a_token_cannot_create_a_token_wider_than_itself(auth: Stub) -> None:
    owner = _owner(auth)
    read_write = _create(auth, owner.access).token
    narrow = _create(auth, read_write, scopes=("read",))  # narrowing is fine
    assert list(narrow.cli_token.scopes) == ["read"]
    write_only = _create(auth, read_write, scopes=("write",)).token
    error = _error(
        auth.CreateCliToken,
        auth_service_pb2.CreateCliTokenRequest(name="wider", scopes=["read", "write"]),
        write_only,
    )
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
    metadata = _error_metadata(
        auth.CreateCliToken, auth_service_pb2.CreateCliTokenRequest(name="wider"), write_only
    )
    assert metadata == {"required_scope": "read"}


def test_a_read_only_token_cannot_create_tokens(auth: Stub) -> None:
    read_only = _create(auth, _owner(auth).access, scopes=("read",)).token
    error = _error(
        auth.CreateCliToken,
        auth_service_pb2.CreateCliTokenRequest(name="x", scopes=["read"]),
        read_only,
    )
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")


# --- bad input ---


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ci", "scopes": ["read", "admin"]}, "scopes"),
        ({"name": "ci", "scopes": ["READ"]}, "scopes"),
        ({"name": "ci", "ttl": duration_pb2.Duration(seconds=0)}, "ttl"),
        ({"name": "ci", "ttl": duration_pb2.Duration(seconds=-60)}, "ttl"),
        ({"name": "ci", "ttl": duration_pb2.Duration(seconds=200 * 365 * 86400)}, "ttl"),
        ({"name": "ci", "expire_time": timestamp_pb2.Timestamp(seconds=0)}, "expire_time"),
    ],
)
def test_create_bad_input_is_invalid_argument_naming_the_field(
    auth: Stub, request_fields: dict[str, Any], field: str
) -> None:
    error = _error(
        auth.CreateCliToken,
        auth_service_pb2.CreateCliTokenRequest(**request_fields),
        _owner(auth).access,
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.field_violations) == [field]


def test_create_expiry_in_the_past_is_invalid(auth: Stub, clock: FakeClock) -> None:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(clock() - dt.timedelta(seconds=1))
    error = _error(
        auth.CreateCliToken,
        auth_service_pb2.CreateCliTokenRequest(name="ci", expire_time=stamp),
        _owner(auth).access,
    )
    assert error.field_violations == {"expire_time": "must be in the future"}


@pytest.fixture
def capped_app(
    settings: Settings, sessions: Sessions, clock: FakeClock, hasher: PasswordHasher
) -> Iterator[App]:
    """The server with MAX_TOKEN_LIFETIME=30d."""
    server = build_server(
        dataclasses.replace(settings, max_token_lifetime=30 * 86400.0),
        sessions,
        clock=clock,
        hasher=hasher,
    )
    server.start()
    yield server
    server.stop(None)


@pytest.fixture
def capped(capped_app: App) -> Iterator[Stub]:
    with grpc.insecure_channel(f"127.0.0.1:{capped_app.port}") as channel:
        yield auth_service_pb2_grpc.AuthServiceStub(channel)


def test_expiry_beyond_max_token_lifetime_is_invalid(capped: Stub, clock: FakeClock) -> None:
    access = _owner(capped).access
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(clock() + dt.timedelta(days=31))
    for fields, field in (
        ({"ttl": duration_pb2.Duration(seconds=31 * 86400)}, "ttl"),
        ({"expire_time": stamp}, "expire_time"),
    ):
        error = _error(
            capped.CreateCliToken,
            auth_service_pb2.CreateCliTokenRequest(name="ci", **fields),
            access,
        )
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.field_violations == {
            field: "must be at most 30d from now (MAX_TOKEN_LIFETIME)"
        }
    # At the cap is fine, and no expiry asked for means the cap.
    _create(capped, access, ttl=duration_pb2.Duration(seconds=30 * 86400))
    info = _create(capped, access).cli_token
    assert info.expire_time.ToDatetime(dt.UTC) == clock() + dt.timedelta(days=30)


def test_cli_login_under_a_cap_expires_with_it(capped: Stub, clock: FakeClock) -> None:
    owner = _owner(capped)
    response = capped.CliLogin(
        auth_service_pb2.CliLoginRequest(email=owner.email, password=PASSWORD)
    )
    assert response.cli_token.expire_time.ToDatetime(dt.UTC) == clock() + dt.timedelta(days=30)


# --- expiry ---


def test_an_expired_token_is_refused_at_its_expiry_despite_the_cache(
    auth: Stub, clock: FakeClock
) -> None:
    token = _create(auth, _owner(auth).access, ttl=duration_pb2.Duration(seconds=600)).token
    auth.GetMe(GET_ME, metadata=bearer(token))  # verified and cached (TOKEN_CACHE_TTL 30 s)
    clock.advance(seconds=599)
    auth.GetMe(GET_ME, metadata=bearer(token))
    clock.advance(seconds=1)
    error = _error(auth.GetMe, GET_ME, token)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")


# --- list ---


def test_list_shows_only_my_active_tokens_oldest_first_and_pages(
    auth: Stub, clock: FakeClock
) -> None:
    me, other = _owner(auth), _owner(auth)
    _create(auth, other.access, name="not mine")
    ids = []
    for index in range(5):
        ids.append(_create(auth, me.access, name=f"t{index}").cli_token.id)
        clock.advance(seconds=1)
    auth.RevokeCliToken(
        auth_service_pb2.RevokeCliTokenRequest(token_id=ids[2]), metadata=bearer(me.access)
    )
    seen: list[str] = []
    page_token = ""
    pages = 0
    while True:
        page = _list(auth, me.access, page_size=2, page_token=page_token)
        seen += [t.id for t in page.cli_tokens]
        pages += 1
        if not page.next_page_token:
            break
        page_token = page.next_page_token
    assert seen == [ids[0], ids[1], ids[3], ids[4]]
    assert pages == 2
    # Another user's page token is not mine to use.
    other_page = _list(auth, me.access, page_size=1).next_page_token
    error = _error(
        auth.ListCliTokens,
        auth_service_pb2.ListCliTokensRequest(page_token=other_page),
        other.access,
    )
    assert error.field_violations.keys() == {"page_token"}


def test_list_bad_page_input_is_invalid_argument(auth: Stub) -> None:
    access = _owner(auth).access
    for fields, field in (
        ({"page_size": -1}, "page_size"),
        ({"page_token": "garbage"}, "page_token"),
    ):
        error = _error(auth.ListCliTokens, auth_service_pb2.ListCliTokensRequest(**fields), access)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert list(error.field_violations) == [field]


# --- last use ---


def test_last_use_time_and_ip_are_recorded_to_the_minute(
    auth: Stub, sessions: Sessions, clock: FakeClock, queries: list[str]
) -> None:
    owner = _owner(auth)
    created = _create(auth, owner.access)
    token_id = created.cli_token.id
    start = clock()
    auth.GetMe(GET_ME, metadata=bearer(created.token))
    row = _row(sessions, token_id)
    assert (row.last_use_time, row.last_use_ip) == (start, "127.0.0.1")

    queries.clear()
    for _ in range(5):
        clock.advance(seconds=10)
        auth.GetMe(GET_ME, metadata=bearer(created.token))
    assert not [q for q in queries if q.lstrip().upper().startswith("UPDATE")]
    assert _row(sessions, token_id).last_use_time == start

    clock.advance(seconds=10)  # a minute after the recorded use
    auth.GetMe(GET_ME, metadata=bearer(created.token))
    assert _row(sessions, token_id).last_use_time == start + dt.timedelta(minutes=1)

    listed = _list(auth, owner.access).cli_tokens[0]
    assert listed.last_use_time.ToDatetime(dt.UTC) == start + dt.timedelta(minutes=1)
    assert listed.last_use_ip == "127.0.0.1"


# --- revoke ---


def test_revoke_takes_effect_on_the_next_call_despite_the_cache(auth: Stub) -> None:
    owner = _owner(auth)
    created = _create(auth, owner.access)
    kept = _create(auth, owner.access, name="kept").token
    auth.GetMe(GET_ME, metadata=bearer(created.token))  # cached now
    auth.RevokeCliToken(
        auth_service_pb2.RevokeCliTokenRequest(token_id=created.cli_token.id),
        metadata=bearer(owner.access),
    )
    error = _error(auth.GetMe, GET_ME, created.token)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    auth.GetMe(GET_ME, metadata=bearer(kept))
    assert [t.name for t in _list(auth, owner.access).cli_tokens] == ["kept"]


def test_revoke_someone_elses_or_unknown_token_is_the_same_not_found(auth: Stub) -> None:
    me, other = _owner(auth), _owner(auth)
    theirs = _create(auth, other.access)
    errors = [
        _error(
            auth.RevokeCliToken,
            auth_service_pb2.RevokeCliTokenRequest(token_id=token_id),
            me.access,
        )
        for token_id in (theirs.cli_token.id, str(uuid.uuid4()))
    ]
    assert errors[0] == errors[1]
    assert (errors[0].code, errors[0].reason) == (grpc.StatusCode.NOT_FOUND, "TOKEN_NOT_FOUND")
    auth.GetMe(GET_ME, metadata=bearer(theirs.token))  # untouched


def test_revoking_a_revoked_token_is_failed_precondition(auth: Stub) -> None:
    owner = _owner(auth)
    token_id = _create(auth, owner.access).cli_token.id
    request = auth_service_pb2.RevokeCliTokenRequest(token_id=token_id)
    auth.RevokeCliToken(request, metadata=bearer(owner.access))
    error = _error(auth.RevokeCliToken, request, owner.access)
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TOKEN_ALREADY_REVOKED",
    )


@pytest.mark.parametrize("token_id", ["", "not-a-uuid"])
def test_revoke_bad_id_is_invalid_argument(auth: Stub, token_id: str) -> None:
    error = _error(
        auth.RevokeCliToken,
        auth_service_pb2.RevokeCliTokenRequest(token_id=token_id),
        _owner(auth).access,
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert list(error.field_violations) == ["token_id"]


def test_a_token_can_revoke_itself(auth: Stub) -> None:
    created = _create(auth, _owner(auth).access)
    auth.RevokeCliToken(
        auth_service_pb2.RevokeCliTokenRequest(token_id=created.cli_token.id),
        metadata=bearer(created.token),
    )
    assert _error(auth.GetMe, GET_ME, created.token).reason == "TOKEN_REVOKED"


def test_revoke_all_revokes_every_token_of_mine_and_only_mine(auth: Stub) -> None:
    me, other = _owner(auth), _owner(auth)
    mine = [_create(auth, me.access, name=f"t{i}").token for i in range(3)]
    theirs = _create(auth, other.access).token
    for token in mine:
        auth.GetMe(GET_ME, metadata=bearer(token))  # all cached
    response = auth.RevokeAllCliTokens(
        auth_service_pb2.RevokeAllCliTokensRequest(), metadata=bearer(mine[0])
    )
    assert response.revoked_count == 3
    for token in mine:
        assert _error(auth.GetMe, GET_ME, token).reason == "TOKEN_REVOKED"
    auth.GetMe(GET_ME, metadata=bearer(theirs))
    auth.GetMe(GET_ME, metadata=bearer(me.access))  # sign-ins are not CLI tokens
    assert _list(auth, me.access).cli_tokens == []
    again = auth.RevokeAllCliTokens(
        auth_service_pb2.RevokeAllCliTokensRequest(), metadata=bearer(me.access)
    )
    assert again.revoked_count == 0
