"""Python client for the Luman backend.

Two layers:
- `Client`: one channel, an explicit token, typed results (`client.auth`, `client.organizations`).
- Module-level functions over the login saved in ~/.luman/auth.json: `login`, `logout`,
  `get_current_user`, `check_backend_health`, the organization calls, and the auth-file
  helpers `save_auth`, `load_auth`, `remove_auth`, `is_authenticated`, `get_auth_token`.

Every failure is a `ClientError` subclass (see luman.client.errors), never a grpc.RpcError.
"""

from __future__ import annotations

from luman.client.address import DEFAULT_ADDRESS, Address, parse_address
from luman.client.api import (
    LogoutResult,
    add_member,
    check_backend_health,
    create_organization,
    get_current_user,
    get_organization,
    list_members,
    list_organizations,
    login,
    logout,
    remove_member,
    resolve_address,
    saved_client,
    update_member_role,
)
from luman.client.auth_store import (
    AuthData,
    auth_file_path,
    config_dir,
    get_auth_token,
    is_authenticated,
    load_auth,
    remove_auth,
    save_auth,
)
from luman.client.channel import open_channel
from luman.client.client import DEFAULT_TIMEOUT, Client, OrganizationRef, UserRef
from luman.client.errors import (
    AlreadyExists,
    AuthFileError,
    ClientError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidAddress,
    InvalidArgument,
    NotFound,
    NotLoggedIn,
    PermissionDenied,
    RateLimited,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from luman.client.models import (
    CliLogin,
    CliToken,
    CreatedCliToken,
    Member,
    Organization,
    Page,
    Role,
    SignIn,
    TokenPair,
    User,
)
from luman.client.service_accounts import (
    CreatedServiceAccount,
    Introspection,
    ServiceAccount,
    ServiceToken,
)
from luman.client.sessions import LogoutAllResult, Session

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TIMEOUT",
    "Address",
    "AlreadyExists",
    "AuthData",
    "AuthFileError",
    "CliLogin",
    "CliToken",
    "Client",
    "ClientError",
    "CreatedCliToken",
    "CreatedServiceAccount",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Introspection",
    "InvalidAddress",
    "InvalidArgument",
    "LogoutAllResult",
    "LogoutResult",
    "Member",
    "NotFound",
    "NotLoggedIn",
    "Organization",
    "OrganizationRef",
    "Page",
    "PermissionDenied",
    "RateLimited",
    "Role",
    "ServerError",
    "ServiceAccount",
    "ServiceToken",
    "Session",
    "SignIn",
    "TokenPair",
    "Unauthenticated",
    "Unavailable",
    "User",
    "UserRef",
    "add_member",
    "auth_file_path",
    "check_backend_health",
    "config_dir",
    "create_organization",
    "get_auth_token",
    "get_current_user",
    "get_organization",
    "is_authenticated",
    "list_members",
    "list_organizations",
    "load_auth",
    "login",
    "logout",
    "open_channel",
    "parse_address",
    "remove_auth",
    "remove_member",
    "resolve_address",
    "save_auth",
    "saved_client",
    "update_member_role",
]
