"""The typed client's personal-token methods against the live test server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from luman.client import Client, FailedPrecondition, NotFound, PermissionDenied, token_format
from luman.server.app import App
from tests.support import PASSWORD, FakeClock, unique_email


@pytest.fixture
def client(app: App) -> Iterator[Client]:
    with Client(f"127.0.0.1:{app.port}") as c:
        email = unique_email()
        c.auth.register(email, PASSWORD, "Ada")
        c.token = c.auth.cli_login(email, PASSWORD, token_name="laptop").token
        yield c


def test_create_iterate_and_revoke(client: Client, clock: FakeClock) -> None:
    clock.advance(seconds=1)  # oldest first: the login's token, then these
    when = clock() + dt.timedelta(days=1)
    created = client.auth.create_cli_token("ci", scopes=["read"], expire_time=when)
    assert token_format.verify_checksum(created.token)
    assert created.token not in repr(created)
    assert created.cli_token.scopes == ("read",)
    assert created.cli_token.expire_time == when
    clock.advance(seconds=1)
    week = client.auth.create_cli_token("week", ttl=dt.timedelta(weeks=1)).cli_token
    assert week.expire_time == clock() + dt.timedelta(weeks=1)
    assert week.scopes == ("read", "write")

    names = [t.name for t in client.auth.iter_cli_tokens(page_size=1)]  # three pages
    assert names == ["laptop", "ci", "week"]
    page = client.auth.list_cli_tokens(page_size=2)
    assert len(page.items) == 2
    assert page.next_page_token

    client.auth.revoke_cli_token(created.cli_token.id)
    with pytest.raises(FailedPrecondition) as again:
        client.auth.revoke_cli_token(created.cli_token.id)
    assert again.value.reason == "TOKEN_ALREADY_REVOKED"
    with pytest.raises(NotFound):
        client.auth.revoke_cli_token("00000000-0000-0000-0000-000000000000")
    assert client.auth.revoke_all_cli_tokens() == 2


def test_a_read_only_token_gets_permission_denied(client: Client) -> None:
    client.token = client.auth.create_cli_token("ro", scopes=["read"]).token
    with pytest.raises(PermissionDenied) as caught:
        client.organizations.create("Acme", "acme-client-ro")
    assert caught.value.reason == "INSUFFICIENT_SCOPE"
