"""Token scopes, driven by the contract: every RPC of every service in methods.SERVICES is
called with tokens that carry each scope alone. A new RPC without a scope declaration fails
here; so does one whose declared scope the server does not enforce."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from luman.api.v1 import annotations_pb2
from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.principal import SERVICE_ONLY_SCOPES
from luman.organization.v1 import organization_service_pb2, organization_service_pb2_grpc
from luman.server import methods
from luman.server.app import App
from tests.server.organization_support import MEMBER
from tests.support import bearer, register, rich_error, unique_email

ALL_METHODS: list[MethodDescriptor] = [
    method for service in methods.SERVICES for method in service.methods
]


def _access(method: MethodDescriptor) -> annotations_pb2.MethodAccess:
    access: annotations_pb2.MethodAccess = method.GetOptions().Extensions[annotations_pb2.access]
    return access


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@pytest.mark.parametrize("method", ALL_METHODS, ids=lambda m: m.full_name)
def test_every_rpc_declares_its_scope_or_is_public(method: MethodDescriptor) -> None:
    access = _access(method)
    if access.public:
        # A public RPC needs no credentials, so a scope on it would promise a check that
        # never happens.
        assert access.scope == annotations_pb2.SCOPE_UNSPECIFIED, method.full_name
        assert not access.no_scope, method.full_name
    else:
        # Exactly one: a scope, or an explicit "any valid credential".
        assert (access.scope != annotations_pb2.SCOPE_UNSPECIFIED) != access.no_scope, (
            f"{method.full_name} is not public and declares neither or both of "
            "(luman.api.v1.access).scope and no_scope"
        )


def test_signing_out_needs_no_scope() -> None:
    # Any token, whatever its scopes, can always sign itself out.
    cli_logout = auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].methods_by_name[
        "CliLogout"
    ]
    assert _access(cli_logout).no_scope
    assert methods.policies()["/luman.auth.v1.AuthService/CliLogout"].scope is None


def test_the_read_and_write_scopes_exist() -> None:
    assert {"read", "write"} <= methods.ALL_SCOPES


@dataclasses.dataclass(frozen=True)
class _Outcome:
    code: grpc.StatusCode
    reason: str
    metadata: dict[str, str]


def _call(channel: grpc.Channel, method: MethodDescriptor, token: str) -> _Outcome | None:
    """Call `method` with an empty request; None when it succeeded."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    rpc = channel.unary_unary(
        _path(method),
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    try:
        rpc(request_class(), metadata=bearer(token), timeout=10)
    except grpc.RpcError as exc:
        error = rich_error(exc)
        metadata: dict[str, str] = {}
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
        for detail in status.details if status is not None else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                metadata = dict(info.metadata)
        return _Outcome(error.code, error.reason, metadata)
    return None


def _token(auth: auth_service_pb2_grpc.AuthServiceStub, access: str, scope: str) -> str:
    response = auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name=f"only {scope}", scopes=[scope]),
        metadata=bearer(access),
    )
    token: str = response.token
    return token


# The scopes a personal token can carry (introspect is for service accounts only, and a service
# account's token is refused by every RPC that acts for a user before its scopes are looked at:
# tests/server/test_service_caller_refusals.py).
PERSONAL_SCOPES = sorted(methods.ALL_SCOPES - SERVICE_ONLY_SCOPES)
SCOPED = [(m, s) for m in ALL_METHODS if not _access(m).public for s in PERSONAL_SCOPES]


@pytest.mark.parametrize(("method", "scope"), SCOPED, ids=[f"{m.name}-{s}" for m, s in SCOPED])
def test_every_rpc_enforces_its_declared_scope(
    channel: grpc.Channel,
    auth: auth_service_pb2_grpc.AuthServiceStub,
    method: MethodDescriptor,
    scope: str,
) -> None:
    """A token with only `scope` calls `method`: refused with INSUFFICIENT_SCOPE (naming the
    scope the contract declares) exactly when the declaration is another scope."""
    access = register(auth).tokens.access_token
    needed = methods.scope_name(_access(method).scope)
    outcome = _call(channel, method, _token(auth, access, scope))
    if needed == scope or _access(method).no_scope:
        # Let through: whatever happens next (bad empty request, NOT_FOUND, success) is not
        # a scope refusal.
        assert outcome is None or outcome.reason != "INSUFFICIENT_SCOPE", outcome
        assert outcome is None or outcome.code != grpc.StatusCode.UNAUTHENTICATED, outcome
    else:
        assert outcome == _Outcome(
            grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE", {"required_scope": needed}
        )


def test_access_tokens_from_a_sign_in_carry_every_scope(
    channel: grpc.Channel, auth: auth_service_pb2_grpc.AuthServiceStub
) -> None:
    access = register(auth).tokens.access_token
    # LogoutAll revokes the very access token making these calls: it goes last.
    for method in sorted(ALL_METHODS, key=lambda m: m.name == "LogoutAll"):
        if _access(method).public or method.name in {"RevokeAllCliTokens"}:
            continue
        if methods.scope_name(_access(method).scope) in SERVICE_ONLY_SCOPES:
            continue  # every user scope, never a service-only one (test_introspection.py)
        outcome = _call(channel, method, access)
        # Let through: neither refused for a scope nor for the token itself.
        assert outcome is None or outcome.reason != "INSUFFICIENT_SCOPE", method.full_name
        assert outcome is None or outcome.code != grpc.StatusCode.UNAUTHENTICATED, (
            method.full_name,
            outcome,
        )


def test_a_read_only_token_gets_insufficient_scope_on_a_write(
    auth: auth_service_pb2_grpc.AuthServiceStub,
    orgs: organization_service_pb2_grpc.OrganizationServiceStub,
) -> None:
    access = register(auth).tokens.access_token
    read_only = _token(auth, access, "read")
    # It reads...
    orgs.ListOrganizations(
        organization_service_pb2.ListOrganizationsRequest(), metadata=bearer(read_only)
    )
    auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(read_only))
    # ...and cannot write, however valid the request.
    with pytest.raises(grpc.RpcError) as caught:
        orgs.CreateOrganization(
            organization_service_pb2.CreateOrganizationRequest(name="Acme", slug="acme-ro"),
            metadata=bearer(read_only),
        )
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
    # Nothing was created.
    listed = orgs.ListOrganizations(
        organization_service_pb2.ListOrganizationsRequest(), metadata=bearer(access)
    )
    assert list(listed.organizations) == []


def test_a_write_token_never_grants_more_than_its_owner_may(
    auth: auth_service_pb2_grpc.AuthServiceStub,
    orgs: organization_service_pb2_grpc.OrganizationServiceStub,
) -> None:
    owner = register(auth).tokens.access_token
    member_email = unique_email()
    member = register(auth, email=member_email)
    orgs.CreateOrganization(
        organization_service_pb2.CreateOrganizationRequest(name="Acme", slug="acme-scope"),
        metadata=bearer(owner),
    )
    orgs.AddMember(
        organization_service_pb2.AddMemberRequest(
            slug="acme-scope", email=member_email, role=MEMBER
        ),
        metadata=bearer(owner),
    )
    write = _token(auth, member.tokens.access_token, "write")
    read_write = auth.CreateCliToken(
        auth_service_pb2.CreateCliTokenRequest(name="rw"),
        metadata=bearer(member.tokens.access_token),
    ).token
    for token in (write, read_write):
        with pytest.raises(grpc.RpcError) as caught:
            orgs.AddMember(
                organization_service_pb2.AddMemberRequest(
                    slug="acme-scope", email=unique_email(), role=MEMBER
                ),
                metadata=bearer(token),
            )
        error = rich_error(caught.value)
        # The scope let the call through; the member's own role then refused it.
        assert (error.code, error.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PERMISSION_DENIED",
        )


def test_scope_refusals_are_rate_limited_per_address(limited_app: App) -> None:
    # Refused before the per-user stage, they count per client address instead: a read-only
    # token cannot hammer a write RPC for free.
    with grpc.insecure_channel(f"127.0.0.1:{limited_app.port}") as channel:
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        orgs = organization_service_pb2_grpc.OrganizationServiceStub(channel)
        read_only = _token(auth, register(auth).tokens.access_token, "read")
        reasons = []
        for _ in range(4):
            with pytest.raises(grpc.RpcError) as caught:
                orgs.CreateOrganization(
                    organization_service_pb2.CreateOrganizationRequest(name="A", slug="acme-rl"),
                    metadata=bearer(read_only),
                )
            reasons.append(rich_error(caught.value).reason)
    assert reasons == ["INSUFFICIENT_SCOPE"] * 3 + ["RATE_LIMITED"]
