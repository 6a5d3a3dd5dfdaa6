"""Wiring: settings and sessions in, a gRPC server with its interceptor chain out."""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from luman.auth.v1 import auth_service_pb2_grpc
from luman.interceptors.error_mapping import ErrorMappingInterceptor
from luman.interceptors.token_auth import TokenAuthInterceptor
from luman.organization.v1 import organization_service_pb2_grpc
from luman.server import methods
from luman.server.auth.passwords import PasswordHasher
from luman.server.auth.service import AuthService
from luman.server.auth.servicer import AuthServicer
from luman.server.auth.tokens import TokenCodec
from luman.server.clock import Clock, system_clock
from luman.server.config import Settings
from luman.server.db.session import Sessions
from luman.server.organization.service import OrganizationService
from luman.server.organization.servicer import OrganizationServicer

logger = logging.getLogger(__name__)


class BindError(Exception):
    """The listening address could not be bound (typically: the port is in use)."""


@dataclasses.dataclass
class App:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    auth: AuthService

    def start(self) -> None:
        self.server.start()
        for service in ("", *(s.full_name for s in methods.SERVICES)):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None) -> None:
        """Stop accepting calls, give in-flight ones `grace` seconds, then cancel the rest."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def build_server(
    settings: Settings,
    sessions: Sessions,
    *,
    clock: Clock = system_clock,
    hasher: PasswordHasher | None = None,
) -> App:
    """Build the server and bind it to settings.host:settings.port (0 picks a free port).

    Raises:
        BindError: the address is taken or invalid.
    """
    hasher = hasher or PasswordHasher(settings.bcrypt_rounds)
    auth = AuthService(sessions, hasher, TokenCodec(settings, clock), clock)
    organizations = OrganizationService(sessions, clock)
    policy = methods.policies()

    interceptors: list[grpc.ServerInterceptor[Any, Any]] = [
        ErrorMappingInterceptor(),
        TokenAuthInterceptor(auth.verify_token, methods.public_methods(policy)),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        interceptors=interceptors,
        options=[
            # grpcio enables SO_REUSEPORT by default, which lets a second server silently share
            # the port; a second start must fail instead.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.max_metadata_size", 16 * 1024),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(auth), server)
    organization_service_pb2_grpc.add_OrganizationServiceServicer_to_server(
        OrganizationServicer(organizations), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *(s.full_name for s in methods.SERVICES),
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise BindError(f"cannot listen on {address}: is another server using the port?") from exc
    if port == 0:
        raise BindError(f"cannot listen on {address}: is another server using the port?")
    return App(server=server, port=port, health=health_servicer, auth=auth)
