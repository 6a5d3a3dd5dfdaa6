"""The saved login file: location, permissions, atomic replacement, and bad files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from luman.client import (
    AuthData,
    AuthFileError,
    auth_file_path,
    config_dir,
    get_auth_token,
    is_authenticated,
    load_auth,
    remove_auth,
    save_auth,
)

DATA = AuthData(
    token="lmn_" + "s" * 43,
    api_url="127.0.0.1:3000",
    user_id="5f0c6f36-5d0e-4d5c-8a53-4f7d1b3d1c11",
    email="ada@example.com",
    name="Ada",
    token_id="7a0f5a8e-1e1f-4a0c-9d4e-0b0a8c2f6d10",
    token_name="laptop",
    create_time="2026-01-01T12:00:00+00:00",
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_config_dir_honours_luman_config_dir(tmp_path: Path) -> None:
    assert config_dir({"LUMAN_CONFIG_DIR": str(tmp_path / "cfg")}) == tmp_path / "cfg"
    assert config_dir({}) == Path.home() / ".luman"
    assert config_dir({"LUMAN_CONFIG_DIR": "  "}) == Path.home() / ".luman"


def test_save_and_load_round_trip_through_env_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUMAN_CONFIG_DIR", str(tmp_path / "cfg"))
    assert load_auth() is None
    assert not is_authenticated()
    assert get_auth_token() is None

    path = save_auth(DATA)
    assert path == tmp_path / "cfg" / "auth.json" == auth_file_path()
    assert load_auth() == DATA
    assert is_authenticated()
    assert get_auth_token() == DATA.token
    assert DATA.token not in repr(load_auth())

    assert remove_auth() is True
    assert remove_auth() is False
    assert load_auth() is None


def test_file_is_0600_and_directory_0700_whatever_the_umask(tmp_path: Path) -> None:
    folder = tmp_path / "nested" / "cfg"
    old = os.umask(0o000)
    try:
        path = save_auth(DATA, folder)
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    assert _mode(folder) == 0o700


def test_existing_loose_directory_is_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "cfg"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    save_auth(DATA, folder)
    assert _mode(folder) == 0o700


def test_replacing_leaves_no_temporary_files_and_keeps_mode(tmp_path: Path) -> None:
    save_auth(DATA, tmp_path)
    replacement = AuthData(token="lmn_" + "t" * 43, api_url="h:1", user_id="u", email="e@x.io")
    path = save_auth(replacement, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auth.json"]
    assert load_auth(tmp_path) == replacement
    assert _mode(path) == 0o600


def test_file_format_is_versioned_json(tmp_path: Path) -> None:
    document = json.loads(save_auth(DATA, tmp_path).read_text())
    assert document["version"] == 1
    assert document["token"] == DATA.token
    assert document["user"] == {"id": DATA.user_id, "email": DATA.email, "name": "Ada"}


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"{not json", "corrupt (not valid JSON)"),
        (b"\xff\xfe\x00", "corrupt (not valid JSON)"),
        (b"[1, 2]", "not a Luman auth file: expected a JSON object"),
        (b'{"token": "x"}', "not a Luman auth file: unsupported format version None"),
        (b'{"version": 99, "token": "x"}', "unsupported format version 99"),
        (
            b'{"version": 1, "token": "", "api_url": "h:1", "user": {"id": "u", "email": "e"}}',
            "'token' is missing",
        ),
        (b'{"version": 1, "token": "t", "api_url": "h:1"}', "'user' is missing"),
        (
            b'{"version": 1, "token": "t", "api_url": "h:1", "user": {"id": 3, "email": "e"}}',
            "'user.id' is missing or not a string",
        ),
        (b"x" * 70000, "too large"),
    ],
)
def test_corrupt_or_foreign_file_is_a_clear_auth_file_error(
    tmp_path: Path, content: bytes, phrase: str
) -> None:
    path = tmp_path / "auth.json"
    path.write_bytes(content)
    with pytest.raises(AuthFileError) as caught:
        load_auth(tmp_path)
    assert phrase in caught.value.message
    assert str(path) in caught.value.message
    with pytest.raises(AuthFileError):
        get_auth_token(tmp_path)
    assert not is_authenticated(tmp_path)
    # Removing it is always possible, so the user can start over.
    assert remove_auth(tmp_path) is True


def test_unreadable_file_is_auth_file_error(tmp_path: Path) -> None:
    (tmp_path / "auth.json").mkdir()  # a directory where the file should be
    with pytest.raises(AuthFileError) as caught:
        load_auth(tmp_path)
    assert "cannot read the auth file" in caught.value.message


def test_unwritable_location_is_auth_file_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AuthFileError) as caught:
        save_auth(DATA, blocker / "cfg")
    assert "cannot save the login" in caught.value.message
