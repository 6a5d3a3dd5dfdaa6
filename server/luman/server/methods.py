"""Per-RPC access policy, read from the `(luman.api.v1.access)` option in the contracts.

The protos are the one place that says which RPCs are public, which rate-limit policy each
uses and which token scope each needs; nothing in the servicers repeats it.
"""

from __future__ import annotations

import dataclasses

from google.protobuf.descriptor import ServiceDescriptor

from luman.api.v1 import annotations_pb2
from luman.audit.v1 import audit_service_pb2
from luman.auth.v1 import auth_service_pb2
from luman.organization.v1 import config_service_pb2, organization_service_pb2

SERVICES: tuple[ServiceDescriptor, ...] = (
    auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"],
    organization_service_pb2.DESCRIPTOR.services_by_name["OrganizationService"],
    config_service_pb2.DESCRIPTOR.services_by_name["OrganizationConfigService"],
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"],
)

# Infrastructure services answer anyone and are never rate limited.
INFRASTRUCTURE_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


# Token scopes are the luman.api.v1.Scope values, lower case without the prefix: a value added
# to the enum is a scope tokens can carry, with nothing to change here.
_SCOPE_PREFIX = "SCOPE_"
ALL_SCOPES: frozenset[str] = frozenset(
    value.name.removeprefix(_SCOPE_PREFIX).lower()
    for value in annotations_pb2.Scope.DESCRIPTOR.values
    if value.number != annotations_pb2.SCOPE_UNSPECIFIED
)
# A non-public RPC that declares no scope (a mistake the contract tests catch) needs write:
# failing closed for restricted tokens rather than open. The token check applies the same to a
# method it finds in no contract (interceptors/token_auth.py).
UNDECLARED_SCOPE = "write"


def scope_name(value: annotations_pb2.Scope.ValueType) -> str:
    """The name tokens carry for a scope value: "read" for SCOPE_READ."""
    return annotations_pb2.Scope.Name(value).removeprefix(_SCOPE_PREFIX).lower()


@dataclasses.dataclass(frozen=True)
class MethodPolicy:
    full_name: str
    public: bool
    rate_limit: annotations_pb2.RateLimitPolicy.ValueType
    # The token scope the RPC needs; None for a public RPC, which needs no credentials, and for
    # one declared `no_scope` (any valid credential).
    scope: str | None = None
    # A service account's token may call it (the others act for a user).
    service_accounts: bool = False


def method_path(service: ServiceDescriptor, method_name: str) -> str:
    return f"/{service.full_name}/{method_name}"


def policies(services: tuple[ServiceDescriptor, ...] = SERVICES) -> dict[str, MethodPolicy]:
    table: dict[str, MethodPolicy] = {}
    for service in services:
        for method in service.methods:
            access = method.GetOptions().Extensions[annotations_pb2.access]
            rate_limit = access.rate_limit or annotations_pb2.RATE_LIMIT_POLICY_DEFAULT
            path = method_path(service, method.name)
            scope = None
            if not access.public:
                # Both declared (a mistake the contract tests catch): the scope, the stricter.
                if access.scope:
                    scope = scope_name(access.scope)
                elif not access.no_scope:
                    scope = UNDECLARED_SCOPE
            table[path] = MethodPolicy(
                path, access.public, rate_limit, scope, access.service_accounts
            )
    return table


def is_infrastructure(method_name: str) -> bool:
    return method_name.startswith(INFRASTRUCTURE_PREFIXES)


def public_methods(table: dict[str, MethodPolicy]) -> frozenset[str]:
    return frozenset(name for name, policy in table.items() if policy.public)


def required_scopes(table: dict[str, MethodPolicy]) -> dict[str, str | None]:
    """Full method name -> the scope a token needs to call it, None for none (`no_scope`):
    every non-public RPC, so that the token check can refuse what is missing here."""
    return {name: policy.scope for name, policy in table.items() if not policy.public}


def service_methods(table: dict[str, MethodPolicy]) -> frozenset[str]:
    """Non-public RPCs a service account's token may call (`service_accounts: true`)."""
    return frozenset(
        name for name, policy in table.items() if policy.service_accounts and not policy.public
    )
