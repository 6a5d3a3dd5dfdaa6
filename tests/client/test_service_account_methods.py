"""The typed client's service-account methods against the live test server."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from luman.client import (
    Client,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    token_format,
)
from luman.server.app import App
from tests.support import PASSWORD, FakeClock, unique_email


@pytest.fixture
def client(app: App) -> Iterator[Client]:
    with Client(f"127.0.0.1:{app.port}") as c:
        signed_in = c.auth.register(unique_email(), PASSWORD, "Ada")
        c.token = signed_in.tokens.access_token
        c.organizations.create("Acme", "acme-client")
        yield c


def test_manage_exchange_and_introspect(client: Client, app: App, clock: FakeClock) -> None:
    created = client.organizations.create_service_account("acme-client", "gw", ["introspect"])
    assert token_format.verify_checksum(created.secret, token_format.SERVICE_PREFIX)
    assert created.secret not in repr(created)
    assert created.service_account.scopes == ("introspect",)
    clock.advance(seconds=1)
    client.organizations.create_service_account("acme-client", "other", ["read"])
    names = [a.name for a in client.organizations.iter_service_accounts("acme-client", 1)]
    assert names == ["gw", "other"]

    user_token = client.token
    assert user_token is not None
    with pytest.raises(PermissionDenied) as denied:
        client.auth.introspect_token(user_token)  # a user cannot introspect
    assert denied.value.reason == "INSUFFICIENT_SCOPE"

    issued = client.auth.create_service_token(created.secret)
    assert issued.expire_time == clock() + dt.timedelta(minutes=15)
    assert issued.access_token not in repr(issued)
    client.token = issued.access_token
    found = client.auth.introspect_token(user_token)
    assert (found.active, found.token_kind, found.organization_id) == (True, "access_token", "")
    assert client.auth.introspect_token(issued.access_token).token_kind == "service_access_token"
    gone = client.auth.introspect_token("lmn_nope")
    assert (gone.active, gone.token_kind, gone.subject, gone.expire_time) == (False, "", "", None)

    client.token = user_token
    client.organizations.delete_service_account("acme-client", created.service_account.id)
    with pytest.raises(NotFound):
        client.organizations.delete_service_account("acme-client", created.service_account.id)
    with pytest.raises(Unauthenticated):
        client.auth.create_service_token(created.secret)
