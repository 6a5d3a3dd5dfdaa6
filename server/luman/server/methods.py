"""Per-RPC access policy, read from the `(luman.api.v1.access)` option in the contracts.

The protos are the one place that says which RPCs are public and which rate-limit policy
each uses; nothing in the servicers repeats it.
"""

from __future__ import annotations

import dataclasses

from google.protobuf.descriptor import ServiceDescriptor

from luman.api.v1 import annotations_pb2
from luman.auth.v1 import auth_service_pb2
from luman.organization.v1 import organization_service_pb2

SERVICES: tuple[ServiceDescriptor, ...] = (
    auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"],
    organization_service_pb2.DESCRIPTOR.services_by_name["OrganizationService"],
)

# Infrastructure services answer anyone and are never rate limited.
INFRASTRUCTURE_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclasses.dataclass(frozen=True)
class MethodPolicy:
    full_name: str
    public: bool
    rate_limit: annotations_pb2.RateLimitPolicy.ValueType


def method_path(service: ServiceDescriptor, method_name: str) -> str:
    return f"/{service.full_name}/{method_name}"


def policies(services: tuple[ServiceDescriptor, ...] = SERVICES) -> dict[str, MethodPolicy]:
    table: dict[str, MethodPolicy] = {}
    for service in services:
        for method in service.methods:
            access = method.GetOptions().Extensions[annotations_pb2.access]
            rate_limit = access.rate_limit or annotations_pb2.RATE_LIMIT_POLICY_DEFAULT
            path = method_path(service, method.name)
            table[path] = MethodPolicy(path, access.public, rate_limit)
    return table


def is_infrastructure(method_name: str) -> bool:
    return method_name.startswith(INFRASTRUCTURE_PREFIXES)


def public_methods(table: dict[str, MethodPolicy]) -> frozenset[str]:
    return frozenset(name for name, policy in table.items() if policy.public)
