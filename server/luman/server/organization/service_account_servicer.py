"""CreateServiceAccount, ListServiceAccounts and DeleteServiceAccount over gRPC:
OrganizationServicer inherits these methods. The rules are in auth/service_accounts.py."""

from __future__ import annotations

import grpc

from luman.interceptors.principal import SERVICE_ONLY_SCOPES, current_principal
from luman.organization.v1 import organization_pb2, organization_service_pb2
from luman.server.auth.service_accounts import ServiceAccounts
from luman.server.convert import write_timestamp
from luman.server.db.models import ServiceAccount
from luman.server.methods import ALL_SCOPES
from luman.server.organization import convert
from luman.server.pagination import clamp_page_size
from luman.server.validation import Violations, check_name, check_uuid


def service_account_to_proto(account: ServiceAccount) -> organization_pb2.ServiceAccount:
    message = organization_pb2.ServiceAccount(
        id=str(account.id),
        organization_id=str(account.organization_id),
        name=account.name,
        scopes=account.scopes.split(),
        secret_hint=account.secret_hint,
    )
    write_timestamp(message.create_time, account.create_time)
    return message


class ServiceAccountRpcs:
    _service_accounts: ServiceAccounts

    def CreateServiceAccount(  # noqa: N802 - grpc names the methods
        self,
        request: organization_service_pb2.CreateServiceAccountRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.CreateServiceAccountResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        name = check_name(v, "name", request.name)
        unknown = sorted({scope for scope in request.scopes if scope not in ALL_SCOPES})
        if unknown:
            v.add(
                "scopes",
                f"unknown scope {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(ALL_SCOPES))}",
            )
        elif not request.scopes:
            # No default: a service account's power is always asked for by name.
            v.add("scopes", f"at least one is required, such as {min(SERVICE_ONLY_SCOPES)!r}")
        v.raise_if_any()
        created = self._service_accounts.create(
            current_principal(), ref, name, frozenset(request.scopes)
        )
        return organization_service_pb2.CreateServiceAccountResponse(
            service_account=service_account_to_proto(created.account), secret=created.secret
        )

    def ListServiceAccounts(  # noqa: N802 - grpc names the methods
        self,
        request: organization_service_pb2.ListServiceAccountsRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.ListServiceAccountsResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        page_size = clamp_page_size(v, request.page_size)
        # Tokens are scoped to the selector as given, so a token cannot be replayed elsewhere.
        scope = f"service-accounts:{ref.organization_id or ref.slug}"
        after = convert.page_key(v, request.page_token, scope)
        v.raise_if_any()
        page = self._service_accounts.list(current_principal(), ref, after, page_size)
        return organization_service_pb2.ListServiceAccountsResponse(
            service_accounts=[service_account_to_proto(account) for account in page.items],
            next_page_token=convert.page_token(page.next_key, scope),
        )

    def DeleteServiceAccount(  # noqa: N802 - grpc names the methods
        self,
        request: organization_service_pb2.DeleteServiceAccountRequest,
        context: grpc.ServicerContext,
    ) -> organization_service_pb2.DeleteServiceAccountResponse:
        v = Violations()
        ref = convert.organization_ref(
            v, request.WhichOneof("organization"), request.organization_id, request.slug
        )
        account_id = check_uuid(v, "service_account_id", request.service_account_id)
        v.raise_if_any()
        assert account_id is not None
        self._service_accounts.delete(current_principal(), ref, account_id)
        return organization_service_pb2.DeleteServiceAccountResponse()
