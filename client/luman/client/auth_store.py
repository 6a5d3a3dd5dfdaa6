"""The saved login: ~/.luman/auth.json (or $LUMAN_CONFIG_DIR/auth.json).

The file holds a secret, so the directory is kept at 0700 and the file at 0600, and it is
replaced atomically (a temporary file in the same directory, then os.replace), so a crash
or a full disk never leaves half a file behind. A file that is not valid JSON, or not one
this module wrote, raises AuthFileError with the path; it is never silently overwritten by
a read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from luman.client.errors import AuthFileError

CONFIG_DIR_ENV = "LUMAN_CONFIG_DIR"
AUTH_FILE_NAME = "auth.json"
FORMAT_VERSION = 1
_MAX_FILE_BYTES = 64 * 1024  # far above a real auth file; bounds what a foreign file costs


@dataclasses.dataclass(frozen=True)
class AuthData:
    """What `login` saves: the CLI token, where it is valid, and whose it is."""

    token: str = dataclasses.field(repr=False)
    api_url: str
    user_id: str
    email: str
    name: str = ""
    token_id: str = ""
    token_name: str = ""
    create_time: str = ""  # ISO 8601, when the token was issued
    scopes: tuple[str, ...] = ()  # as issued; empty when unknown (a password login)
    expire_time: str = ""  # ISO 8601; "" when it does not expire or is unknown

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "token": self.token,
            "api_url": self.api_url,
            "user": {"id": self.user_id, "email": self.email, "name": self.name},
            "token_id": self.token_id,
            "token_name": self.token_name,
            "create_time": self.create_time,
            "scopes": list(self.scopes),
            "expire_time": self.expire_time,
        }

    @classmethod
    def from_json(cls, data: object) -> AuthData:
        """Raises ValueError naming what is missing or malformed."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        version = data.get("version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported format version {version!r}")
        user = data.get("user")
        if not isinstance(user, dict):
            raise ValueError("'user' is missing")
        return cls(
            token=_text(data, "token", required=True),
            api_url=_text(data, "api_url", required=True),
            user_id=_text(user, "id", required=True, where="user."),
            email=_text(user, "email", required=True, where="user."),
            name=_text(user, "name", where="user."),
            token_id=_text(data, "token_id"),
            token_name=_text(data, "token_name"),
            create_time=_text(data, "create_time"),
            scopes=_words(data, "scopes"),
            expire_time=_text(data, "expire_time"),
        )


def _text(data: Mapping[str, object], key: str, *, required: bool = False, where: str = "") -> str:
    value = data.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"'{where}{key}' is missing or not a string")
    return value


def _words(data: Mapping[str, object], key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{key}' is not a list of strings")
    return tuple(value)


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """$LUMAN_CONFIG_DIR if set, else ~/.luman."""
    env = os.environ if environ is None else environ
    configured = env.get(CONFIG_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".luman"


def auth_file_path(directory: Path | None = None) -> Path:
    return (directory or config_dir()) / AUTH_FILE_NAME


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` all at once: readers see the old file or the new one, never
    half of it. The file is created 0600 from the start (mkstemp), so a secret in it is never
    readable by others, not even for a moment."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def save_auth(data: AuthData, directory: Path | None = None) -> Path:
    """Write the login atomically with mode 0600 in a 0700 directory; returns the file's path.

    Raises:
        AuthFileError: the directory or file cannot be written.
    """
    folder = directory or config_dir()
    path = folder / AUTH_FILE_NAME
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask and ignored for an existing folder.
        if stat.S_IMODE(folder.stat().st_mode) != 0o700:
            folder.chmod(0o700)
        write_atomically(path, json.dumps(data.to_json(), indent=2) + "\n")
        _fsync_directory(folder)
    except OSError as exc:
        raise AuthFileError(f"cannot save the login to {path}: {exc.strerror or exc}") from exc
    return path


def load_auth(directory: Path | None = None) -> AuthData | None:
    """The saved login, or None when there is none.

    Raises:
        AuthFileError: the file exists but is unreadable, not JSON, or not a Luman auth file.
    """
    path = auth_file_path(directory)
    try:
        with path.open("rb") as fh:
            raw = fh.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuthFileError(f"cannot read the auth file {path}: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_FILE_BYTES:
        raise AuthFileError(f"{path} is not a Luman auth file (too large)")
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AuthFileError(f"the auth file {path} is corrupt (not valid JSON)") from None
    try:
        return AuthData.from_json(document)
    except ValueError as exc:
        raise AuthFileError(f"{path} is not a Luman auth file: {exc}") from None


def remove_auth(directory: Path | None = None) -> bool:
    """Delete the saved login; True if there was one (even a corrupt one) to delete.

    Raises:
        AuthFileError: the file exists but cannot be deleted.
    """
    path = auth_file_path(directory)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise AuthFileError(f"cannot delete the auth file {path}: {exc.strerror or exc}") from exc
    return True


def is_authenticated(directory: Path | None = None) -> bool:
    """Whether a usable login is saved. Local only: the server may still reject the token."""
    try:
        return load_auth(directory) is not None
    except AuthFileError:
        return False


def get_auth_token(directory: Path | None = None) -> str | None:
    """The saved token, or None when not logged in.

    Raises:
        AuthFileError: the auth file is unreadable or corrupt.
    """
    data = load_auth(directory)
    return data.token if data else None


def _fsync_directory(folder: Path) -> None:
    # Makes the rename itself durable; not every platform lets a directory be opened.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
