"""The module-level API over the saved login, against the real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from luman.client import (
    Client,
    NotLoggedIn,
    Role,
    Unauthenticated,
    Unavailable,
    add_member,
    check_backend_health,
    create_organization,
    get_current_user,
    get_organization,
    list_members,
    list_organizations,
    load_auth,
    login,
    logout,
    remove_member,
    resolve_address,
    save_auth,
    update_member_role,
)
from luman.client.api import default_token_name
from luman.client.auth_store import AuthData
from luman.server.app import App
from tests.support import PASSWORD, FakeClock, unique_email


def _account(app: App, name: str = "Ada") -> str:
    email = unique_email(name.lower())
    with Client(f"127.0.0.1:{app.port}") as client:
        client.auth.register(email, PASSWORD, name)
    return email


def test_login_saves_token_address_and_user(app: App, tmp_path: Path) -> None:
    email = _account(app)
    api_url = f"127.0.0.1:{app.port}"
    saved = login(email, PASSWORD, api_url=api_url, directory=tmp_path)
    assert load_auth(tmp_path) == saved
    assert saved.api_url == api_url
    assert saved.email == email
    assert saved.token.startswith("lmn_")
    assert saved.token_name == default_token_name()
    # Later calls find the backend from the saved address.
    assert resolve_address(directory=tmp_path, environ={}).port == app.port
    assert get_current_user(directory=tmp_path).email == email


def test_failed_login_keeps_the_previous_login(app: App, tmp_path: Path) -> None:
    email = _account(app)
    first = login(email, PASSWORD, api_url=f"127.0.0.1:{app.port}", directory=tmp_path)
    with pytest.raises(Unauthenticated):
        login(email, "wrong password", directory=tmp_path)
    assert load_auth(tmp_path) == first


def test_logging_in_again_revokes_the_replaced_token(app: App, tmp_path: Path) -> None:
    email = _account(app)
    api_url = f"127.0.0.1:{app.port}"
    first = login(email, PASSWORD, api_url=api_url, directory=tmp_path, token_name="one")
    second = login(email, PASSWORD, directory=tmp_path, token_name="two")
    assert second.token != first.token
    with Client(api_url, token=first.token) as old, pytest.raises(Unauthenticated) as caught:
        old.auth.get_me()
    assert caught.value.reason == "TOKEN_REVOKED"
    assert get_current_user(directory=tmp_path).email == email


def test_logout_revokes_then_deletes(app: App, tmp_path: Path) -> None:
    email = _account(app)
    saved = login(email, PASSWORD, api_url=f"127.0.0.1:{app.port}", directory=tmp_path)
    result = logout(directory=tmp_path)
    assert (result.was_logged_in, result.revoked, result.error) == (True, True, None)
    assert load_auth(tmp_path) is None
    with pytest.raises(NotLoggedIn):
        get_current_user(directory=tmp_path)
    with Client(saved.api_url, token=saved.token) as client, pytest.raises(Unauthenticated):
        client.auth.get_me()


def test_logout_when_unreachable_still_deletes_locally(tmp_path: Path, closed_port: int) -> None:
    save_auth(
        AuthData(token="lmn_x", api_url=f"127.0.0.1:{closed_port}", user_id="u", email="e@x.io"),
        tmp_path,
    )
    result = logout(directory=tmp_path)
    assert result.was_logged_in
    assert not result.revoked
    assert isinstance(result.error, Unavailable)
    assert load_auth(tmp_path) is None


def test_logout_without_login_does_nothing(tmp_path: Path) -> None:
    result = logout(directory=tmp_path)
    assert (result.was_logged_in, result.revoked, result.error) == (False, False, None)


def test_logout_removes_a_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "auth.json").write_text("{oops")
    result = logout(directory=tmp_path)
    assert result.was_logged_in
    assert not result.revoked
    assert not (tmp_path / "auth.json").exists()


def test_organization_functions(app: App, tmp_path: Path, clock: FakeClock) -> None:
    owner = _account(app, "Owner")
    grace = _account(app, "Grace")
    login(owner, PASSWORD, api_url=f"127.0.0.1:{app.port}", directory=tmp_path)
    created = create_organization("Acme", "acme-api", directory=tmp_path)
    assert get_organization("acme-api", directory=tmp_path) == created
    assert [o.slug for o in list_organizations(directory=tmp_path)] == ["acme-api"]
    clock.advance(seconds=1)  # members are listed by join time
    assert add_member("acme-api", grace, "admin", directory=tmp_path).role is Role.ADMIN
    assert (
        update_member_role("acme-api", grace, Role.MEMBER, directory=tmp_path).role is Role.MEMBER
    )
    assert [m.email for m in list_members("acme-api", directory=tmp_path)] == [owner, grace]
    remove_member("acme-api", grace, directory=tmp_path)
    assert [m.email for m in list_members("acme-api", directory=tmp_path)] == [owner]


def test_check_backend_health(app: App, closed_port: int) -> None:
    assert check_backend_health(f"127.0.0.1:{app.port}") is True
    assert check_backend_health(f"127.0.0.1:{closed_port}") is False


def test_resolve_address_order(tmp_path: Path) -> None:
    save_auth(AuthData(token="t", api_url="saved:1", user_id="u", email="e@x.io"), tmp_path)
    env = {"LUMAN_API_URL": "env:2"}
    assert str(resolve_address("flag:3", environ=env, directory=tmp_path)) == "flag:3"
    assert str(resolve_address(None, environ=env, directory=tmp_path)) == "env:2"
    assert str(resolve_address(None, environ={}, directory=tmp_path)) == "saved:1"
    assert str(resolve_address(None, environ={}, directory=tmp_path / "none")) == ("localhost:3000")
    (tmp_path / "auth.json").write_text("corrupt")
    assert str(resolve_address(None, environ={}, directory=tmp_path)) == "localhost:3000"
