"""Module-level functions over the saved login: the programmatic API for scripts.

    from luman.client import login, get_current_user, list_organizations, logout

    login("ada@example.com", password, api_url="localhost:3000")  # saves ~/.luman/auth.json
    print(get_current_user().email)
    for organization in list_organizations():
        print(organization.slug)
    logout()

Each function takes the same keywords: `api_url` (else $LUMAN_API_URL, else the address
saved at login, else localhost:3000), `timeout` (seconds per call) and `directory` (the
config folder, else $LUMAN_CONFIG_DIR, else ~/.luman).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

from luman.client.address import DEFAULT_ADDRESS, Address, parse_address
from luman.client.auth_store import AuthData, load_auth, remove_auth, save_auth
from luman.client.client import DEFAULT_TIMEOUT, Client, OrganizationRef, UserRef
from luman.client.device_login import DeviceToken
from luman.client.errors import AuthFileError, ClientError, NotLoggedIn
from luman.client.models import Member, Organization, Role, User

API_URL_ENV = "LUMAN_API_URL"
MAX_TOKEN_NAME = 100


def resolve_address(
    api_url: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    directory: Path | None = None,
) -> Address:
    """`api_url`, else $LUMAN_API_URL, else the address saved at login, else localhost:3000.

    Raises:
        InvalidAddress: the chosen address cannot be parsed.
    """
    env = os.environ if environ is None else environ
    for candidate in (api_url, env.get(API_URL_ENV)):
        if candidate and candidate.strip():
            return parse_address(candidate)
    # An unreadable auth file must not block choosing an address (`login` replaces it).
    with contextlib.suppress(AuthFileError):
        saved = load_auth(directory)
        if saved is not None:
            return parse_address(saved.api_url)
    return parse_address(DEFAULT_ADDRESS)


def default_token_name() -> str:
    """The host name, so that `luman login` tokens can be told apart; "cli" if unknown."""
    with contextlib.suppress(OSError):
        name = socket.gethostname().strip()
        if name:
            return name[:MAX_TOKEN_NAME]
    return "cli"


@contextlib.contextmanager
def saved_client(
    *,
    api_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Path | None = None,
    root_certificates: bytes | None = None,
) -> Iterator[Client]:
    """A Client carrying the saved token, closed on exit.

    Raises:
        NotLoggedIn: no login is saved (nothing is contacted).
        AuthFileError: the auth file is unreadable or corrupt.
    """
    saved = load_auth(directory)
    if saved is None:
        raise NotLoggedIn()
    address = resolve_address(api_url, directory=directory)
    with Client(
        address, token=saved.token, timeout=timeout, root_certificates=root_certificates
    ) as client:
        yield client


def login(
    email: str,
    password: str,
    *,
    api_url: str | None = None,
    token_name: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Path | None = None,
    root_certificates: bytes | None = None,
) -> AuthData:
    """Get a CLI token (CliLogin) and save it with the address and user; returns what was saved.

    A previous login for the same backend is replaced and its token revoked (best effort).
    On failure nothing is saved and the previous login stays as it was.

    Raises:
        Unauthenticated: wrong email or password.
        ClientError: any other failure (InvalidArgument, RateLimited, Unavailable, ...).
    """
    address = resolve_address(api_url, directory=directory)
    try:
        previous = load_auth(directory)
    except AuthFileError:
        previous = None
    with Client(address, timeout=timeout, root_certificates=root_certificates) as client:
        result = client.auth.cli_login(
            email, password, default_token_name() if token_name is None else token_name
        )
        data = AuthData(
            token=result.token,
            api_url=str(address),
            user_id=result.user.id,
            email=result.user.email,
            name=result.user.name,
            token_id=result.token_id,
            token_name=result.token_name,
            create_time=result.create_time.isoformat() if result.create_time else "",
        )
        _save_replacing(client, data, previous, address, directory)
    return data


def save_device_login(
    result: DeviceToken,
    *,
    api_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Path | None = None,
    root_certificates: bytes | None = None,
) -> AuthData:
    """Save the token a device login's poll returned (Client.auth.poll_device_login), as
    `login` saves its own: the previous login for the same backend is replaced and its token
    revoked (best effort). Returns what was saved.

    Raises:
        AuthFileError: the file cannot be written (the previous login stays).
    """
    address = resolve_address(api_url, directory=directory)
    try:
        previous = load_auth(directory)
    except AuthFileError:
        previous = None
    token = result.cli_token
    data = AuthData(
        token=result.token,
        api_url=str(address),
        user_id=result.user.id,
        email=result.user.email,
        name=result.user.name,
        token_id=token.id,
        token_name=token.name,
        create_time=token.create_time.isoformat() if token.create_time else "",
        scopes=token.scopes or result.scopes,
        expire_time=token.expire_time.isoformat() if token.expire_time else "",
    )
    with Client(address, timeout=timeout, root_certificates=root_certificates) as client:
        _save_replacing(client, data, previous, address, directory)
    return data


def _save_replacing(
    client: Client,
    data: AuthData,
    previous: AuthData | None,
    address: Address,
    directory: Path | None,
) -> None:
    save_auth(data, directory)
    if previous is not None and previous.token != data.token:
        _revoke_quietly(client, previous, address)


def _revoke_quietly(client: Client, previous: AuthData, address: Address) -> None:
    # A replaced token would otherwise stay valid forever with nobody holding it. Only on
    # the same backend: another one may be unreachable, which would stall this login.
    try:
        if parse_address(previous.api_url) != address:
            return
        client.token = previous.token
        client.auth.cli_logout()
    except ClientError:
        pass
    finally:
        client.token = None


@dataclasses.dataclass(frozen=True)
class LogoutResult:
    """What `logout` did.

    Attributes:
        was_logged_in: a login (possibly a corrupt file) was saved.
        revoked: the server revoked the token.
        error: why the token was not revoked (Unauthenticated: the server had already
            rejected it; Unavailable: the backend could not be reached), else None.
        api_url: the backend that was asked to revoke the token.
    """

    was_logged_in: bool
    revoked: bool
    error: ClientError | None = None
    api_url: str = ""


def logout(
    *,
    api_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Path | None = None,
    root_certificates: bytes | None = None,
) -> LogoutResult:
    """Revoke the saved token on the server, then delete it locally.

    The local file is deleted whatever the server says, including when it cannot be
    reached or the file is corrupt; the result says whether the token was revoked.

    Raises:
        AuthFileError: the file exists but cannot be deleted.
    """
    try:
        saved = load_auth(directory)
    except AuthFileError as exc:
        remove_auth(directory)
        return LogoutResult(was_logged_in=True, revoked=False, error=exc)
    if saved is None:
        return LogoutResult(was_logged_in=False, revoked=False)
    address = resolve_address(api_url, directory=directory)
    error: ClientError | None = None
    try:
        with Client(
            address, token=saved.token, timeout=timeout, root_certificates=root_certificates
        ) as client:
            client.auth.cli_logout()
    except ClientError as exc:
        error = exc
    finally:
        remove_auth(directory)
    return LogoutResult(True, revoked=error is None, error=error, api_url=str(address))


def get_current_user(
    *, api_url: str | None = None, timeout: float = DEFAULT_TIMEOUT, directory: Path | None = None
) -> User:
    """The user the saved token belongs to, as the server sees it (GetMe)."""
    with saved_client(api_url=api_url, timeout=timeout, directory=directory) as client:
        return client.auth.get_me()


def check_backend_health(
    api_url: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Path | None = None,
    root_certificates: bytes | None = None,
) -> bool:
    """True when the backend answers the grpc.health.v1 check with SERVING; needs no login."""
    address = resolve_address(api_url, directory=directory)
    try:
        with Client(address, timeout=timeout, root_certificates=root_certificates) as client:
            return client.check_health() == "SERVING"
    except ClientError:
        return False


def list_organizations(
    *, api_url: str | None = None, timeout: float = DEFAULT_TIMEOUT, directory: Path | None = None
) -> list[Organization]:
    """Every organization the logged-in user belongs to, with their role in each."""
    with saved_client(api_url=api_url, timeout=timeout, directory=directory) as client:
        return list(client.organizations.iter())


def create_organization(
    name: str,
    slug: str,
    *,
    api_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Path | None = None,
) -> Organization:
    """Create an organization owned by the logged-in user."""
    with saved_client(api_url=api_url, timeout=timeout, directory=directory) as client:
        return client.organizations.create(name, slug)


def get_organization(
    organization: OrganizationRef,
    *,
    api_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Path | None = None,
) -> Organization:
    """One organization by slug (str) or id (uuid.UUID)."""
    with saved_client(api_url=api_url, timeout=timeout, directory=directory) as client:
        return client.organizations.get(organization)


def list_members(
    organization: OrganizationRef,
    *,
    api_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Path | None = None,
) -> list[Member]:
    """Every member of the organization, earliest joined first."""
    with saved_client(api_url=api_url, timeout=timeout, directory=directory) as client:
        return list(client.organizations.iter_members(organization))


def add_member(
    organization: OrganizationRef,
    user: UserRef,
    role: Role | str = Role.MEMBER,
    *,
    api_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Path | None = None,
) -> Member:
    """Add a registered user, by email or id, to the organization."""
    with saved_client(api_url=api_url, timeout=timeout, directory=directory) as client:
        return client.organizations.add_member(organization, user, role)


def remove_member(
    organization: OrganizationRef,
    user: UserRef,
    *,
    api_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Path | None = None,
) -> None:
    """Remove a member, by email or id."""
    with saved_client(api_url=api_url, timeout=timeout, directory=directory) as client:
        client.organizations.remove_member(organization, user)


def update_member_role(
    organization: OrganizationRef,
    user: UserRef,
    role: Role | str,
    *,
    api_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Path | None = None,
) -> Member:
    """Change a member's role, by email or id."""
    with saved_client(api_url=api_url, timeout=timeout, directory=directory) as client:
        return client.organizations.update_member_role(organization, user, role)
