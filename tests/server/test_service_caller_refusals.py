"""A service account's token on the RPCs that act for a user, driven by the contract: every RPC
of every service in methods.SERVICES that is neither public nor marked `service_accounts`
answers PERMISSION_DENIED USER_REQUIRED, whatever scopes the token carries; those refusals are
rate limited per client address like any other refused credential."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.organization.v1 import organization_service_pb2, organization_service_pb2_grpc
from luman.server import methods
from luman.server.app import App
from tests.server.organization_support import create_organization, sign_up
from tests.support import RichError, bearer, rich_error

POLICIES = methods.policies()
ALL_METHODS = [method for service in methods.SERVICES for method in service.methods]


def _path(method: MethodDescriptor) -> str:
    return methods.method_path(method.containing_service, method.name)


USER_METHODS = [
    m
    for m in ALL_METHODS
    if not POLICIES[_path(m)].public and not POLICIES[_path(m)].service_accounts
]
SERVICE_METHODS = [
    m for m in ALL_METHODS if POLICIES[_path(m)].service_accounts and not POLICIES[_path(m)].public
]
USER_REQUIRED = (grpc.StatusCode.PERMISSION_DENIED, "USER_REQUIRED")


def test_the_contract_has_both_kinds() -> None:
    # Guards the tables below against an empty parametrization passing vacuously.
    assert USER_METHODS
    assert SERVICE_METHODS


def _service_token(channel: grpc.Channel) -> str:
    """A fresh organization's service account holding every scope there is, exchanged for its
    access token: no scope can be why a call is refused."""
    auth = auth_service_pb2_grpc.AuthServiceStub(channel)
    orgs = organization_service_pb2_grpc.OrganizationServiceStub(channel)
    owner = sign_up(auth)
    organization = create_organization(orgs, owner)
    account = orgs.CreateServiceAccount(
        organization_service_pb2.CreateServiceAccountRequest(
            slug=organization.slug, name="everything", scopes=sorted(methods.ALL_SCOPES)
        ),
        metadata=owner.metadata,
    )
    assert set(account.service_account.scopes) == methods.ALL_SCOPES
    response = auth.CreateServiceToken(
        auth_service_pb2.CreateServiceTokenRequest(secret=account.secret)
    )
    token: str = response.access_token
    return token


def _call(channel: grpc.Channel, method: MethodDescriptor, token: str) -> RichError | None:
    """Call `method` with an empty request (token authentication runs in the interceptor chain,
    before the servicer validates anything); None when it succeeded."""
    response_class = message_factory.GetMessageClass(method.output_type)
    rpc = channel.unary_unary(
        _path(method),
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    request = message_factory.GetMessageClass(method.input_type)()
    try:
        rpc(request, metadata=bearer(token), timeout=10)
    except grpc.RpcError as exc:
        return rich_error(exc)
    return None


@pytest.mark.parametrize("method", USER_METHODS, ids=lambda m: m.full_name)
def test_a_service_token_is_refused_by_every_rpc_that_acts_for_a_user(
    channel: grpc.Channel, method: MethodDescriptor
) -> None:
    error = _call(channel, method, _service_token(channel))
    assert error is not None, f"{method.full_name} served a service account"
    assert (error.code, error.reason) == USER_REQUIRED, method.full_name


@pytest.mark.parametrize("method", SERVICE_METHODS, ids=lambda m: m.full_name)
def test_a_service_token_passes_token_authentication_where_the_contract_allows_it(
    channel: grpc.Channel, method: MethodDescriptor
) -> None:
    error = _call(channel, method, _service_token(channel))
    # Whatever follows (an empty request's INVALID_ARGUMENT, say) is not a refusal of the caller.
    assert error is None or (error.code, error.reason) != USER_REQUIRED, method.full_name
    assert error is None or error.code != grpc.StatusCode.UNAUTHENTICATED, (method, error)


def test_user_required_refusals_are_rate_limited_per_address(limited_app: App) -> None:
    # Refused by token authentication, before the per-user stage: they count per client
    # address, so a service token cannot hammer a user's RPC for free.
    with grpc.insecure_channel(f"127.0.0.1:{limited_app.port}") as channel:
        token = _service_token(channel)
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        reasons = []
        for _ in range(4):
            with pytest.raises(grpc.RpcError) as caught:
                auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=bearer(token))
            reasons.append(rich_error(caught.value).reason)
    assert reasons == ["USER_REQUIRED"] * 3 + ["RATE_LIMITED"]
