"""db/reads.py: a SELECT on the driver's cursor gives what a Connection gives, leaves the pooled
connection as it found it, and fails as a Connection fails. On both backends, on the real
database (a real outage through tests/database_outage.py for a lost connection)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from luman.server.db.availability import is_unavailable
from luman.server.db.models import Membership, Organization, Role, User
from luman.server.db.reads import Read
from luman.server.db.session import Sessions, make_engine, make_sessions
from tests.database_outage import DatabaseOutage

_users = User.__table__.c
_memberships = Membership.__table__.c
# Every kind of conversion the list pages need: a Uuid parameter (hex text on SQLite), a
# datetime parameter and column (text on SQLite, timezone-aware in Python), an Enum column,
# a LIMIT parameter and the OFFSET SQLite adds with its own bound value.
_MEMBERSHIPS = (
    sa.select(_memberships.user_id, _memberships.role, _memberships.create_time, _users.email)
    .join(User.__table__, _users.id == _memberships.user_id)
    .where(_memberships.organization_id == sa.bindparam("organization_id"))
    .where(_memberships.create_time >= sa.bindparam("since", type_=_memberships.create_time.type))
    .order_by(_memberships.create_time, _memberships.user_id)
    .limit(sa.bindparam("limit"))
)


@pytest.fixture
def organization(sessions: Sessions) -> uuid.UUID:
    """An organization with three members, joined a second apart."""
    start = dt.datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=dt.UTC)
    organization = Organization(
        name="Reads", slug=f"reads-{uuid.uuid4().hex[:8]}", create_time=start
    )
    with sessions.write.begin() as session:
        session.add(organization)
        session.flush()
        for n, role in enumerate((Role.OWNER, Role.ADMIN, Role.MEMBER)):
            user = User(
                email=f"reads-{uuid.uuid4().hex[:8]}@example.com",
                name=f"R{n}",
                password_hash="",
                create_time=start,
            )
            session.add(user)
            session.flush()
            session.add(
                Membership(
                    organization_id=organization.id,
                    user_id=user.id,
                    role=role,
                    create_time=start + dt.timedelta(seconds=n),
                )
            )
    return organization.id


def _params(organization_id: uuid.UUID, limit: int = 10) -> dict[str, Any]:
    return {
        "organization_id": organization_id,
        "since": dt.datetime(2026, 12, 7, 12, 0, 1, tzinfo=dt.UTC),
        "limit": limit,
    }


def test_a_read_gives_the_rows_a_connection_gives(
    sessions: Sessions, organization: uuid.UUID
) -> None:
    read = Read(_MEMBERSHIPS)
    with sessions.engine.connect() as connection:
        expected = [tuple(row) for row in connection.execute(_MEMBERSHIPS, _params(organization))]
    rows = read.all(sessions.statements, _params(organization))
    assert rows == expected
    assert [row[1] for row in rows] == [Role.ADMIN, Role.MEMBER]  # the first joined before
    assert isinstance(rows[0][0], uuid.UUID)
    assert rows[0][2] == dt.datetime(2026, 12, 7, 12, 0, 1, 123456, tzinfo=dt.UTC)
    assert read.all(sessions.statements, _params(organization, limit=1)) == expected[:1]
    assert read.all(sessions.statements, _params(uuid.uuid4())) == []


def test_a_missing_parameter_is_refused_before_the_database(sessions: Sessions) -> None:
    with pytest.raises(sa.exc.InvalidRequestError, match="limit"):
        Read(_MEMBERSHIPS).all(
            sessions.statements, {"organization_id": uuid.uuid4(), "since": None}
        )


@pytest.fixture
def one_connection(database_url: str) -> Iterator[Sessions]:
    """Sessions on an engine with a single pooled connection: every checkout is the same one."""
    engine = make_engine(database_url, pool_size=1)
    yield make_sessions(engine)
    engine.dispose()


def test_the_connection_goes_back_to_the_pool_as_it_was_taken(
    one_connection: Sessions, organization: uuid.UUID
) -> None:
    engine = one_connection.statements
    assert len(Read(_MEMBERSHIPS).all(engine, _params(organization))) == 2
    # A statement the database refuses: the driver's error, as SQLAlchemy raises it, without
    # the parameters.
    failing = Read(
        sa.select(sa.column("x"))
        .select_from(sa.table("no_such_table"))
        .where(sa.column("x") == sa.bindparam("p", type_=sa.String))
    )
    with pytest.raises(sa.exc.DBAPIError) as refused:
        failing.all(engine, {"p": "secret-value"})
    assert "no_such_table" in str(refused.value)
    assert "secret-value" not in str(refused.value)
    assert not refused.value.connection_invalidated
    assert not is_unavailable(refused.value)
    # The same pooled connection, neither in a transaction nor in autocommit, serves a write
    # session as before.
    raw = one_connection.engine.raw_connection()
    try:
        if engine.dialect.name == "postgresql":
            assert raw.dbapi_connection.autocommit is False  # type: ignore[union-attr]
        else:
            assert raw.dbapi_connection.in_transaction is False  # type: ignore[union-attr]
    finally:
        raw.close()
    with one_connection.write.begin() as session:
        session.execute(sa.update(User).where(User.id == uuid.uuid4()).values(name="x"))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_lost_connection_is_invalidated_and_counts_as_unavailable(
    database_url: str,
) -> None:
    outage = DatabaseOutage(database_url, pool_size=1)
    try:
        read = Read(sa.select(sa.literal(1, sa.Integer)))
        assert read.all(outage.sessions.statements, {}) == [(1,)]
        outage.cut()
        with pytest.raises(sa.exc.DBAPIError) as lost:
            read.all(outage.sessions.statements, {})
        assert is_unavailable(lost.value)
        outage.restore()
        assert read.all(outage.sessions.statements, {}) == [(1,)]
        # Lost while the statement runs: the server ends this very session.
        suicide = Read(sa.select(sa.func.pg_terminate_backend(sa.func.pg_backend_pid())))
        with pytest.raises(sa.exc.DBAPIError) as ended:
            suicide.all(outage.sessions.statements, {})
        assert ended.value.connection_invalidated
        assert is_unavailable(ended.value)
        # The dead connection was not put back: the next read connects afresh.
        assert read.all(outage.sessions.statements, {}) == [(1,)]
    finally:
        outage.close()


def test_with_statement_hooks_on_the_engine_the_read_runs_on_a_connection(
    sessions: Sessions, organization: uuid.UUID
) -> None:
    # Tracing (tracing.py) gives each statement its span from these hooks.
    seen: list[str] = []

    def hook(*args: Any) -> None:
        seen.append(args[2])

    sa.event.listen(sessions.engine, "before_cursor_execute", hook)
    try:
        rows = Read(_MEMBERSHIPS).all(sessions.statements, _params(organization))
    finally:
        sa.event.remove(sessions.engine, "before_cursor_execute", hook)
    assert len(rows) == 2
    assert [s for s in seen if s.lstrip().upper().startswith("SELECT")]
