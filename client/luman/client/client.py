"""Client: one channel to the backend, the token on every call, typed results and errors.

with Client("localhost:3000", token=token) as client:
    me = client.auth.get_me()
    for organization in client.organizations.iter():
        print(organization.slug, organization.role)
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Protocol, TypeVar

import grpc
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from luman.audit.v1 import audit_service_pb2_grpc
from luman.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from luman.client.accounts import PasswordChange, PasswordReset
from luman.client.address import DEFAULT_ADDRESS, Address, parse_address
from luman.client.audit import AuditAPI
from luman.client.channel import USER_AGENT, open_channel
from luman.client.device_login import DeviceAuthorization, DeviceLogin, DeviceToken
from luman.client.errors import InvalidArgument, NotFound, NotLoggedIn, from_rpc_error
from luman.client.identities import Identity, SignInOptions
from luman.client.invitations import InvitationsAPI
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
    role_to_proto,
)
from luman.client.organization_configs import OrganizationConfigsAPI
from luman.client.ownership import OwnershipTransfer
from luman.client.service_accounts import (
    CreatedServiceAccount,
    Introspection,
    ServiceAccount,
    ServiceToken,
)
from luman.client.sessions import LogoutAllResult, Session
from luman.organization.v1 import (
    config_service_pb2_grpc,
    organization_pb2,
    organization_service_pb2,
    organization_service_pb2_grpc,
)

DEFAULT_TIMEOUT = 10.0
MAX_PAGE_SIZE = 500  # the server lowers larger page sizes to this

OrganizationRef = str | uuid.UUID
"""An organization: a str is its slug, a uuid.UUID its id."""

UserRef = str | uuid.UUID
"""A user: a str containing "@" is an email address; any other str or a uuid.UUID is a user id."""

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Client:
    """A connection to the Luman backend.

    Args:
        address: "host:port", "grpc://host:port" or "grpcs://host[:port]" (TLS).
        token: a CLI token or access token sent as "authorization: Bearer"; settable later.
        timeout: the deadline of each call, in seconds.
        root_certificates: PEM CA bundle for grpcs; None uses the system's trust store.

    Raises:
        InvalidAddress: `address` cannot be parsed.

    Every method raises a ClientError subclass on failure (see luman.client.errors). Calls do
    not wait for an unreachable backend: they fail at once with Unavailable (or, if the
    connection attempt hangs, with DeadlineExceeded when the deadline passes).
    """

    def __init__(
        self,
        address: str | Address = DEFAULT_ADDRESS,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        root_certificates: bytes | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.address = parse_address(address)
        self.token = token
        self.timeout = timeout
        self._channel = open_channel(
            self.address,
            lambda: self.token,
            root_certificates=root_certificates,
            user_agent=user_agent,
        )
        self.auth = AuthAPI(self, auth_service_pb2_grpc.AuthServiceStub(self._channel))
        self.organizations = OrganizationsAPI(
            self, organization_service_pb2_grpc.OrganizationServiceStub(self._channel)
        )
        # Shared organization configurations (OrganizationConfigService).
        self.organization_configs = OrganizationConfigsAPI(
            self, config_service_pb2_grpc.OrganizationConfigServiceStub(self._channel)
        )
        # Invitations to organizations: sent by owners and admins, answered by the invitee.
        self.invitations = InvitationsAPI(
            self, organization_service_pb2_grpc.OrganizationServiceStub(self._channel)
        )
        # The audit log (AuditService): the caller's account's or an organization's events.
        self.audit = AuditAPI(self, audit_service_pb2_grpc.AuditServiceStub(self._channel))
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def check_health(self, service: str = "") -> str:
        """The grpc.health.v1 status of `service` ("" is the whole server): "SERVING",
        "NOT_SERVING", "SERVICE_UNKNOWN" or "UNKNOWN"."""
        response = self.call(
            self._health.Check, health_pb2.HealthCheckRequest(service=service), authenticated=False
        )
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return name

    def call(
        self,
        rpc: grpc.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        authenticated: bool = True,
    ) -> Resp:
        """Invoke one unary RPC with the client's deadline, translating errors.

        Raises:
            NotLoggedIn: `authenticated` and no token is set; nothing is sent.
            ClientError: the call failed.
        """
        if authenticated and not self.token:
            raise NotLoggedIn()
        try:
            # wait_for_ready=False: fail at once while the backend is unreachable instead of
            # queueing the call until the deadline.
            return rpc(request, timeout=self.timeout, wait_for_ready=False)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc


class AuthAPI:
    """Accounts and credentials (luman.auth.v1.AuthService)."""

    def __init__(self, client: Client, stub: auth_service_pb2_grpc.AuthServiceStub) -> None:
        self._client = client
        self._stub = stub

    def register(self, email: str, password: str, name: str) -> SignIn:
        """Create an account. Returns the user and a first access/refresh token pair."""
        response = self._client.call(
            self._stub.Register,
            auth_service_pb2.RegisterRequest(email=email, password=password, name=name),
            authenticated=False,
        )
        return SignIn(User.from_proto(response.user), TokenPair.from_proto(response.tokens))

    def login(self, email: str, password: str) -> SignIn:
        """Exchange credentials for a short-lived access token and a refresh token."""
        response = self._client.call(
            self._stub.Login,
            auth_service_pb2.LoginRequest(email=email, password=password),
            authenticated=False,
        )
        return SignIn(User.from_proto(response.user), TokenPair.from_proto(response.tokens))

    def refresh_token(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token; each one works once."""
        response = self._client.call(
            self._stub.RefreshToken,
            auth_service_pb2.RefreshTokenRequest(refresh_token=refresh_token),
            authenticated=False,
        )
        return TokenPair.from_proto(response.tokens)

    def cli_login(self, email: str, password: str, token_name: str = "") -> CliLogin:
        """Exchange credentials for a long-lived, revocable CLI token ("cli" if unnamed)."""
        response = self._client.call(
            self._stub.CliLogin,
            auth_service_pb2.CliLoginRequest(email=email, password=password, token_name=token_name),
            authenticated=False,
        )
        return CliLogin.from_proto(response)

    def cli_logout(self) -> None:
        """Revoke the CLI token this client sends (only it: tokens created with it stay)."""
        self._client.call(self._stub.CliLogout, auth_service_pb2.CliLogoutRequest())

    def start_device_login(
        self,
        client_id: str,
        *,
        scopes: Sequence[str] = (),
        host_name: str = "",
        client_version: str = "",
        os: str = "",
    ) -> DeviceAuthorization:
        """Start a device login (RFC 8628); needs no token. `scopes` empty means read and write;
        `host_name`, `client_version` and `os` are shown to the approver.

        Raises:
            InvalidArgument: client_id not allowed, unknown scope, metadata too long.
        """
        response = self._client.call(
            self._stub.StartDeviceLogin,
            auth_service_pb2.StartDeviceLoginRequest(
                client_id=client_id,
                scope=" ".join(scopes),
                host_name=host_name,
                client_version=client_version,
                os=os,
            ),
            authenticated=False,
        )
        return DeviceAuthorization.from_proto(response)

    def poll_device_login(self, device_code: str, client_id: str) -> DeviceToken:
        """Poll a device login once; needs no token. Returns the token once it is approved
        (only the first poll after approval gets it).

        Raises:
            AuthorizationPending: not decided yet; poll again after the interval.
            SlowDown: polled too fast; `.interval` is the new interval.
            AccessDenied: denied, or the approval was withdrawn.
            ExpiredToken: the code expired; start again.
            InvalidGrant: unknown, another client's or already claimed device code.
        """
        response = self._client.call(
            self._stub.PollDeviceLogin,
            auth_service_pb2.PollDeviceLoginRequest(device_code=device_code, client_id=client_id),
            authenticated=False,
        )
        return DeviceToken.from_proto(response)

    def get_device_login(self, user_code: str) -> DeviceLogin:
        """What the pending device login with this code is, for its approver.

        Raises:
            NotFound: DEVICE_CODE_NOT_FOUND (never issued, expired or already decided).
            RateLimited: TOO_MANY_CODE_ATTEMPTS.
        """
        response = self._client.call(
            self._stub.GetDeviceLogin, auth_service_pb2.GetDeviceLoginRequest(user_code=user_code)
        )
        return DeviceLogin.from_proto(response.device_login)

    def approve_device_login(self, user_code: str, *, scopes: Sequence[str] = ()) -> None:
        """Approve the pending device login; `scopes` narrow what it asked for (empty: all).

        Raises:
            NotFound, RateLimited: as get_device_login.
            InvalidArgument: a scope the login did not ask for.
            PermissionDenied: INSUFFICIENT_SCOPE.
        """
        self._client.call(
            self._stub.ApproveDeviceLogin,
            auth_service_pb2.ApproveDeviceLoginRequest(user_code=user_code, scopes=list(scopes)),
        )

    def deny_device_login(self, user_code: str) -> None:
        """Deny the pending device login: its polls get AccessDenied.

        Raises:
            NotFound, RateLimited: as get_device_login.
        """
        self._client.call(
            self._stub.DenyDeviceLogin, auth_service_pb2.DenyDeviceLoginRequest(user_code=user_code)
        )

    def get_me(self) -> User:
        """The user the token belongs to."""
        response = self._client.call(self._stub.GetMe, auth_service_pb2.GetMeRequest())
        return User.from_proto(response.user)

    def update_me(self, *, name: str) -> User:
        """Change the caller's display name (1 to 100 characters). Returns the user."""
        request = auth_service_pb2.UpdateMeRequest(user=auth_pb2.User(name=name))
        request.update_mask.paths.append("name")
        response = self._client.call(self._stub.UpdateMe, request)
        return User.from_proto(response.user)

    def change_password(
        self, current_password: str, new_password: str, *, revoke_cli_tokens: bool = False
    ) -> PasswordChange:
        """Replace the password. Every other session is revoked; with `revoke_cli_tokens`,
        every CLI token but the one this client sends too.

        Raises:
            Unauthenticated: reason INVALID_CREDENTIALS, the current password is wrong.
            InvalidArgument: the new password is not 8 to 72 bytes.
        """
        response = self._client.call(
            self._stub.ChangePassword,
            auth_service_pb2.ChangePasswordRequest(
                current_password=current_password,
                new_password=new_password,
                revoke_cli_tokens=revoke_cli_tokens,
            ),
        )
        return PasswordChange.from_proto(response)

    def send_verification_email(self) -> str:
        """Send the caller a new message that verifies their address; returns the address.

        Raises:
            FailedPrecondition: reason EMAIL_ALREADY_VERIFIED.
            RateLimited: reason EMAIL_RECENTLY_SENT (one a minute; retry_after says when).
        """
        response = self._client.call(
            self._stub.SendVerificationEmail, auth_service_pb2.SendVerificationEmailRequest()
        )
        email: str = response.email
        return email

    def verify_email(self, *, token: str = "", email: str = "", code: str = "") -> User:
        """Verify an address with a message's link token, or its address and code
        ("XXXX-XXXX"). Needs no sign-in. Returns the user.

        Raises:
            Unauthenticated: reason EMAIL_CODE_INVALID (unknown token, wrong code or address).
            FailedPrecondition: reason EMAIL_CODE_EXPIRED or EMAIL_CODE_USED.
        """
        response = self._client.call(
            self._stub.VerifyEmail,
            auth_service_pb2.VerifyEmailRequest(token=token, email=email, code=code),
            authenticated=False,
        )
        return User.from_proto(response.user)

    def request_password_reset(self, email: str) -> None:
        """Ask for a password-reset message to `email`. The answer is the same whether or not
        an account has that (verified) address; only such an account gets the message."""
        self._client.call(
            self._stub.RequestPasswordReset,
            auth_service_pb2.RequestPasswordResetRequest(email=email),
            authenticated=False,
        )

    def reset_password(
        self,
        new_password: str,
        *,
        token: str = "",
        email: str = "",
        code: str = "",
        revoke_cli_tokens: bool = False,
    ) -> PasswordReset:
        """Set a new password with a reset message's link token, or its address and code.
        Every session of the account is revoked; with `revoke_cli_tokens` every CLI token too.

        Raises:
            Unauthenticated: reason EMAIL_CODE_INVALID.
            FailedPrecondition: reason EMAIL_CODE_EXPIRED or EMAIL_CODE_USED.
            InvalidArgument: the new password is not 8 to 72 bytes.
        """
        response = self._client.call(
            self._stub.ResetPassword,
            auth_service_pb2.ResetPasswordRequest(
                token=token,
                email=email,
                code=code,
                new_password=new_password,
                revoke_cli_tokens=revoke_cli_tokens,
            ),
            authenticated=False,
        )
        return PasswordReset.from_proto(response)

    def delete_me(self, password: str) -> None:
        """Delete the caller's account; every token of it stops working.

        Raises:
            Unauthenticated: reason INVALID_CREDENTIALS, the password is wrong.
            FailedPrecondition: reason LAST_OWNER; metadata["organizations"] lists the slugs
                of the organizations the caller is the last owner of, comma-separated.
        """
        self._client.call(self._stub.DeleteMe, auth_service_pb2.DeleteMeRequest(password=password))

    def list_identity_providers(self) -> SignInOptions:
        """The identity providers the server signs people in with, and whether it takes
        passwords. Needs no token."""
        response = self._client.call(
            self._stub.ListIdentityProviders, auth_service_pb2.ListIdentityProvidersRequest()
        )
        return SignInOptions.from_proto(response)

    def list_identities(self) -> list[Identity]:
        """The provider accounts linked to the caller's account, oldest first."""
        response = self._client.call(
            self._stub.ListIdentities, auth_service_pb2.ListIdentitiesRequest()
        )
        return [Identity.from_proto(i) for i in response.identities]

    def unlink_identity(self, identity_id: str | uuid.UUID) -> None:
        """Unlink a provider account: it no longer signs in as the caller.

        Raises:
            NotFound: reason IDENTITY_NOT_FOUND.
            FailedPrecondition: reason LAST_SIGN_IN_METHOD (no password and no other
                provider would be left).
        """
        self._client.call(
            self._stub.UnlinkIdentity,
            auth_service_pb2.UnlinkIdentityRequest(identity_id=str(identity_id)),
        )

    def list_sessions(self, page_size: int = 0, page_token: str = "") -> Page[Session]:
        """One page of the caller's open sessions (sign-ins), oldest first."""
        response = self._client.call(
            self._stub.ListSessions,
            auth_service_pb2.ListSessionsRequest(page_size=page_size, page_token=page_token),
        )
        return Page([Session.from_proto(s) for s in response.sessions], response.next_page_token)

    def iter_sessions(self, page_size: int = MAX_PAGE_SIZE) -> Iterator[Session]:
        """Every open session of the caller, fetching pages as the iteration goes."""
        token = ""
        while True:
            page = self.list_sessions(page_size, token)
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    def revoke_session(self, session_id: str | uuid.UUID) -> None:
        """Sign one of the caller's sessions out.

        Raises:
            NotFound: reason SESSION_NOT_FOUND (someone else's session too).
            FailedPrecondition: reason SESSION_ALREADY_REVOKED.
        """
        self._client.call(
            self._stub.RevokeSession,
            auth_service_pb2.RevokeSessionRequest(session_id=str(session_id)),
        )

    def logout_all(self, *, include_cli_tokens: bool = False) -> LogoutAllResult:
        """Revoke every session and every access and refresh token of the caller issued
        before now; CLI tokens too with `include_cli_tokens`."""
        response = self._client.call(
            self._stub.LogoutAll,
            auth_service_pb2.LogoutAllRequest(include_cli_tokens=include_cli_tokens),
        )
        return LogoutAllResult.from_proto(response)

    def create_cli_token(
        self,
        name: str,
        *,
        scopes: Sequence[str] = (),
        ttl: dt.timedelta | None = None,
        expire_time: dt.datetime | None = None,
    ) -> CreatedCliToken:
        """Issue a named personal token; its secret is in the result only.

        Args:
            scopes: "read", "write"; empty means both. Never more than the calling token has.
            ttl: lifetime from now; or `expire_time`, an aware datetime. Neither: no expiry
                (or the server's MAX_TOKEN_LIFETIME). Called with a personal token, the new
                token expires no later than it (InvalidArgument otherwise) and is revoked
                with it.
        """
        request = auth_service_pb2.CreateCliTokenRequest(name=name, scopes=list(scopes))
        if ttl is not None:
            request.ttl.FromTimedelta(ttl)
        elif expire_time is not None:
            request.expire_time.FromDatetime(expire_time)
        response = self._client.call(self._stub.CreateCliToken, request)
        return CreatedCliToken(response.token, CliToken.from_proto(response.cli_token))

    def list_cli_tokens(self, page_size: int = 0, page_token: str = "") -> Page[CliToken]:
        """One page of the caller's tokens that are not revoked, oldest first."""
        response = self._client.call(
            self._stub.ListCliTokens,
            auth_service_pb2.ListCliTokensRequest(page_size=page_size, page_token=page_token),
        )
        return Page([CliToken.from_proto(t) for t in response.cli_tokens], response.next_page_token)

    def iter_cli_tokens(self, page_size: int = MAX_PAGE_SIZE) -> Iterator[CliToken]:
        """Every token of the caller that is not revoked, fetching pages as it goes."""
        token = ""
        while True:
            page = self.list_cli_tokens(page_size, token)
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    def revoke_cli_token(self, token_id: str | uuid.UUID) -> None:
        """Revoke one of the caller's tokens, and every token created with it.

        Raises:
            NotFound: TOKEN_NOT_FOUND (no such token of the caller's).
            FailedPrecondition: TOKEN_ALREADY_REVOKED.
        """
        self._client.call(
            self._stub.RevokeCliToken,
            auth_service_pb2.RevokeCliTokenRequest(token_id=str(token_id)),
        )

    def revoke_all_cli_tokens(self) -> int:
        """Revoke every token of the caller, this client's included; returns how many."""
        response = self._client.call(
            self._stub.RevokeAllCliTokens, auth_service_pb2.RevokeAllCliTokensRequest()
        )
        return int(response.revoked_count)

    def create_service_token(self, secret: str) -> ServiceToken:
        """Exchange a service account's secret ("lms_...") for a short-lived access token; no
        token is needed on the client for this call.

        Raises:
            Unauthenticated: INVALID_CREDENTIALS (unknown, deleted or mistyped secret).
        """
        response = self._client.call(
            self._stub.CreateServiceToken,
            auth_service_pb2.CreateServiceTokenRequest(secret=secret),
            authenticated=False,
        )
        return ServiceToken.from_proto(response)

    def introspect_token(self, token: str) -> Introspection:
        """Whether `token` is active now and what it is. The client's token must be a service
        account's access token with the introspect scope.

        Raises:
            PermissionDenied: INSUFFICIENT_SCOPE (the client's token lacks introspect).
        """
        response = self._client.call(
            self._stub.IntrospectToken, auth_service_pb2.IntrospectTokenRequest(token=token)
        )
        return Introspection.from_proto(response)


class _SelectsOrganization(Protocol):
    organization_id: str
    slug: str


Selecting = TypeVar("Selecting", bound=_SelectsOrganization)


def _select(request: Selecting, organization: OrganizationRef) -> Selecting:
    """Fill the request's `organization` oneof: organization_id for a UUID, else slug."""
    if isinstance(organization, uuid.UUID):
        request.organization_id = str(organization)
    else:
        request.slug = organization
    return request


def _role(role: Role | str) -> organization_pb2.OrganizationRole.ValueType:
    try:
        return role_to_proto(Role.parse(role))
    except ValueError as exc:
        raise InvalidArgument(str(exc), code=None, field_violations={"role": str(exc)}) from None


class OrganizationsAPI:
    """Organizations and their members (luman.organization.v1.OrganizationService)."""

    def __init__(
        self, client: Client, stub: organization_service_pb2_grpc.OrganizationServiceStub
    ) -> None:
        self._client = client
        self._stub = stub

    def list(self, page_size: int = 0, page_token: str = "") -> Page[Organization]:
        """One page of the caller's organizations, oldest membership first."""
        response = self._client.call(
            self._stub.ListOrganizations,
            organization_service_pb2.ListOrganizationsRequest(
                page_size=page_size, page_token=page_token
            ),
        )
        return Page(
            [Organization.from_proto(o) for o in response.organizations],
            response.next_page_token,
        )

    def iter(self, page_size: int = MAX_PAGE_SIZE) -> Iterator[Organization]:
        """Every organization of the caller, fetching pages as the iteration goes."""
        token = ""
        while True:
            page = self.list(page_size, token)
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    def create(self, name: str, slug: str) -> Organization:
        """Create an organization; the caller becomes its owner."""
        response = self._client.call(
            self._stub.CreateOrganization,
            organization_service_pb2.CreateOrganizationRequest(name=name, slug=slug),
        )
        return Organization.from_proto(response.organization)

    def get(self, organization: OrganizationRef) -> Organization:
        """One organization the caller belongs to (NotFound for others)."""
        response = self._client.call(
            self._stub.GetOrganization,
            _select(organization_service_pb2.GetOrganizationRequest(), organization),
        )
        return Organization.from_proto(response.organization)

    def list_members(
        self, organization: OrganizationRef, page_size: int = 0, page_token: str = ""
    ) -> Page[Member]:
        """One page of the organization's members, earliest joined first."""
        response = self._client.call(
            self._stub.ListMembers,
            _select(
                organization_service_pb2.ListMembersRequest(
                    page_size=page_size, page_token=page_token
                ),
                organization,
            ),
        )
        return Page([Member.from_proto(m) for m in response.members], response.next_page_token)

    def iter_members(
        self, organization: OrganizationRef, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[Member]:
        """Every member of the organization, fetching pages as the iteration goes."""
        token = ""
        while True:
            page = self.list_members(organization, page_size, token)
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    def find_member(self, organization: OrganizationRef, email: str) -> Member:
        """The member with this email address.

        Raises:
            NotFound: reason MEMBER_NOT_FOUND when nobody in the organization has the email.
        """
        wanted = email.strip().lower()
        for member in self.iter_members(organization):
            if member.email.lower() == wanted:
                return member
        raise NotFound(
            f"no member with email {email.strip()} in {organization}",
            code=grpc.StatusCode.NOT_FOUND,
            reason="MEMBER_NOT_FOUND",
        )

    def add_member(
        self, organization: OrganizationRef, user: UserRef, role: Role | str = Role.MEMBER
    ) -> Member:
        """Add an existing user, by email or id, with a role."""
        request = _select(organization_service_pb2.AddMemberRequest(role=_role(role)), organization)
        if isinstance(user, str) and "@" in user:
            request.email = user
        else:
            request.user_id = str(user)
        response = self._client.call(self._stub.AddMember, request)
        return Member.from_proto(response.member)

    def remove_member(self, organization: OrganizationRef, user: UserRef) -> None:
        """Remove a member, by email or id. An email costs a ListMembers lookup first."""
        self._client.call(
            self._stub.RemoveMember,
            _select(
                organization_service_pb2.RemoveMemberRequest(
                    user_id=self._user_id(organization, user)
                ),
                organization,
            ),
        )

    def update_member_role(
        self, organization: OrganizationRef, user: UserRef, role: Role | str
    ) -> Member:
        """Change a member's role, by email or id. An email costs a ListMembers lookup first."""
        proto_role = _role(role)  # before the lookup, so a bad role costs no call
        response = self._client.call(
            self._stub.UpdateMemberRole,
            _select(
                organization_service_pb2.UpdateMemberRoleRequest(
                    user_id=self._user_id(organization, user), role=proto_role
                ),
                organization,
            ),
        )
        return Member.from_proto(response.member)

    def create_service_account(
        self, organization: OrganizationRef, name: str, scopes: Sequence[str]
    ) -> CreatedServiceAccount:
        """Create a service account (owners and admins); its secret is in the result only."""
        response = self._client.call(
            self._stub.CreateServiceAccount,
            _select(
                organization_service_pb2.CreateServiceAccountRequest(
                    name=name, scopes=list(scopes)
                ),
                organization,
            ),
        )
        return CreatedServiceAccount(
            response.secret, ServiceAccount.from_proto(response.service_account)
        )

    def list_service_accounts(
        self, organization: OrganizationRef, page_size: int = 0, page_token: str = ""
    ) -> Page[ServiceAccount]:
        """One page of the organization's service accounts, oldest first."""
        response = self._client.call(
            self._stub.ListServiceAccounts,
            _select(
                organization_service_pb2.ListServiceAccountsRequest(
                    page_size=page_size, page_token=page_token
                ),
                organization,
            ),
        )
        return Page(
            [ServiceAccount.from_proto(a) for a in response.service_accounts],
            response.next_page_token,
        )

    def iter_service_accounts(
        self, organization: OrganizationRef, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[ServiceAccount]:
        """Every service account of the organization, fetching pages as it goes."""
        token = ""
        while True:
            page = self.list_service_accounts(organization, page_size, token)
            yield from page.items
            if not page.next_page_token:
                return
            token = page.next_page_token

    def delete_service_account(
        self, organization: OrganizationRef, service_account_id: str | uuid.UUID
    ) -> None:
        """Delete a service account: its secret and tokens stop working.

        Raises:
            NotFound: SERVICE_ACCOUNT_NOT_FOUND.
        """
        self._client.call(
            self._stub.DeleteServiceAccount,
            _select(
                organization_service_pb2.DeleteServiceAccountRequest(
                    service_account_id=str(service_account_id)
                ),
                organization,
            ),
        )

    def update(
        self, organization: OrganizationRef, *, name: str | None = None, slug: str | None = None
    ) -> Organization:
        """Rename the organization (owners and admins) and/or change its slug (owners only).
        The old slug keeps redirecting to it for the server's ORGANIZATION_SLUG_REDIRECT_DAYS.

        Raises:
            AlreadyExists: SLUG_TAKEN, or SLUG_RESERVED (another organization's former slug).
        """
        paths = [path for path, value in (("name", name), ("slug", slug)) if value is not None]
        request = _select(
            organization_service_pb2.UpdateOrganizationRequest(
                organization=organization_pb2.Organization(name=name or "", slug=slug or ""),
                update_mask=field_mask_pb2.FieldMask(paths=paths),
            ),
            organization,
        )
        response = self._client.call(self._stub.UpdateOrganization, request)
        return Organization.from_proto(response.organization)

    def delete(self, organization: OrganizationRef, confirm_slug: str) -> None:
        """Delete the organization (owners only) with its memberships and service accounts.
        `confirm_slug` must be its current slug, exactly (else InvalidArgument)."""
        self._client.call(
            self._stub.DeleteOrganization,
            _select(
                organization_service_pb2.DeleteOrganizationRequest(confirm_slug=confirm_slug),
                organization,
            ),
        )

    def offer_ownership_transfer(
        self, organization: OrganizationRef, user: UserRef
    ) -> OwnershipTransfer:
        """Offer ownership to a member or admin, by email or id (owners only); it replaces the
        pending offer and lapses after 7 days."""
        request = _select(organization_service_pb2.OfferOwnershipTransferRequest(), organization)
        if isinstance(user, str) and "@" in user:
            request.email = user
        else:
            request.user_id = str(user)
        response = self._client.call(self._stub.OfferOwnershipTransfer, request)
        return OwnershipTransfer.from_proto(response.ownership_transfer)

    def get_ownership_transfer(self, organization: OrganizationRef) -> OwnershipTransfer:
        """The pending offer (NotFound, OWNERSHIP_TRANSFER_NOT_FOUND, when there is none)."""
        response = self._client.call(
            self._stub.GetOwnershipTransfer,
            _select(organization_service_pb2.GetOwnershipTransferRequest(), organization),
        )
        return OwnershipTransfer.from_proto(response.ownership_transfer)

    def accept_ownership_transfer(self, organization: OrganizationRef) -> Member:
        """Accept the offer made to the caller: the caller becomes an owner, the offering owner
        an admin.

        Raises:
            FailedPrecondition: OFFERER_NOT_OWNER, TARGET_NOT_MEMBER.
        """
        response = self._client.call(
            self._stub.AcceptOwnershipTransfer,
            _select(organization_service_pb2.AcceptOwnershipTransferRequest(), organization),
        )
        return Member.from_proto(response.member)

    def decline_ownership_transfer(self, organization: OrganizationRef) -> None:
        """Decline the offer made to the caller."""
        self._client.call(
            self._stub.DeclineOwnershipTransfer,
            _select(organization_service_pb2.DeclineOwnershipTransferRequest(), organization),
        )

    def cancel_ownership_transfer(self, organization: OrganizationRef) -> None:
        """Withdraw the pending offer (any owner)."""
        self._client.call(
            self._stub.CancelOwnershipTransfer,
            _select(organization_service_pb2.CancelOwnershipTransferRequest(), organization),
        )

    def _user_id(self, organization: OrganizationRef, user: UserRef) -> str:
        # RemoveMember and UpdateMemberRole take only a user id; an email is resolved among
        # the organization's members (the only users the caller may see).
        if isinstance(user, str) and "@" in user:
            return self.find_member(organization, user).user_id
        return str(user)
