"""Wiring: settings and sessions in, a gRPC server with its interceptor chain out."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from luman.audit.v1 import audit_service_pb2, audit_service_pb2_grpc
from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.base import Behavior, MethodInfo, MethodInterceptor
from luman.interceptors.chain import InterceptorChain
from luman.interceptors.client_address import CallerResolver, parse_trusted_proxies
from luman.interceptors.error_mapping import ErrorMappingInterceptor
from luman.interceptors.request_logging import RequestLoggingInterceptor
from luman.interceptors.token_auth import TokenAuthInterceptor
from luman.interceptors.tracing import TracingInterceptor
from luman.organization.v1 import (
    config_service_pb2,
    config_service_pb2_grpc,
    organization_service_pb2,
    organization_service_pb2_grpc,
)
from luman.server import methods
from luman.server.audit.service import AuditService
from luman.server.audit.servicer import AuditServicer
from luman.server.audit.worker import AuditWorker
from luman.server.auth.client_certificates import ClientCertificates
from luman.server.auth.device_logins import CodeAttempts, DeviceLogins
from luman.server.auth.invalidations import InvalidationChannel, open_channel
from luman.server.auth.key_ring import KeyRing
from luman.server.auth.passwords import PasswordHasher
from luman.server.auth.service import AuthService
from luman.server.auth.servicer import AuthServicer
from luman.server.auth.tokens import TokenCodec
from luman.server.clock import Clock, system_clock
from luman.server.config import Settings
from luman.server.db.availability import DatabaseAvailability
from luman.server.db.session import Sessions
from luman.server.federation.adapters import build_adapters
from luman.server.federation.logins import ProviderLogins
from luman.server.mail.delivery import build_transport
from luman.server.mail.renderers import build_renderers
from luman.server.mail.worker import MailWorker
from luman.server.metrics import Metrics, MetricsListener
from luman.server.organization.config_service import OrganizationConfigService
from luman.server.organization.config_servicer import OrganizationConfigServicer
from luman.server.organization.invitations import InvitationService
from luman.server.organization.service import OrganizationService
from luman.server.organization.servicer import OrganizationServicer
from luman.server.rate_limits import (
    build_code_attempt_limiters,
    build_rate_limit_stages,
    policy_resolver,
)
from luman.server.request_logs.spool import RequestLogSpool, spool_directory
from luman.server.request_logs.writer import RequestLogWriter
from luman.server.tls import ServerCertificates
from luman.server.tracing import build_tracer_provider, trace_statements, without_credentials

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)


class BindError(Exception):
    """The listening address could not be bound (typically: the port is in use)."""


@dataclasses.dataclass
class App:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    auth: AuthService
    # The chain, the servicers (by full service name) and the worker pool the server runs
    # them on: the HTTP gateway calls the same methods through them, in process (behavior()).
    chain: InterceptorChain
    servicers: dict[str, object]
    executor: ThreadPoolExecutor
    request_log: RequestLogWriter | None = None
    # The password hasher build_server made (closed with the server), not one passed in.
    own_hasher: PasswordHasher | None = None
    # Says NOT_SERVING in `health` while the database is away (db/availability.py).
    database: DatabaseAvailability | None = None
    # The access-token signing keys (auth/key_ring.py); None with JWT_ALGORITHM=HS256.
    keys: KeyRing | None = None
    # Device logins (RFC 8628); the gateway sets their verification address once it is bound.
    device_logins: DeviceLogins | None = None
    # Sign-ins through identity providers; the gateway sets their redirect URIs' address too.
    provider_logins: ProviderLogins | None = None
    # The server's clock, for the gateway's device page (how old a code is, cookie lifetimes).
    clock: Clock = system_clock
    # The audit log's thread: deferred events (failed sign-ins) and retention (audit/worker.py).
    audit: AuditWorker | None = None
    # Sends queued email (mail/worker.py).
    mail: MailWorker | None = None
    # Prometheus metrics (metrics.py); None with METRICS_ENABLED=false. The listener serves
    # them on METRICS_PORT; without it the gateway serves them on the HTTP port.
    metrics: Metrics | None = None
    metrics_listener: MetricsListener | None = None
    # TLS_CERT_FILE/TLS_KEY_FILE for both ports (tls.py); None: plaintext. reload() on SIGHUP.
    tls: ServerCertificates | None = None
    # Revocations and key rotations to and from the other processes on this database
    # (auth/invalidations.py); None for an in-memory SQLite database.
    invalidations: InvalidationChannel | None = None
    # MTLS_PORT as bound (a client certificate required there); None without one.
    mtls_port: int | None = None
    # OpenTelemetry (tracing.py); None: tracing off. `own_tracer_provider`: build_server made
    # it from the settings, and stop() shuts it down (an injected one is only flushed).
    tracer_provider: TracerProvider | None = None
    own_tracer_provider: bool = False
    # Removes the database statement hooks from the engine (tracing.trace_statements).
    untrace_statements: Callable[[], None] | None = None

    def behavior(self, method: str) -> Behavior:
        """The unary method `method` ("/package.Service/Method") inside the whole chain, as a
        gRPC call to it runs.

        Raises:
            KeyError: no such method.
        """
        service, _, name = method.lstrip("/").partition("/")
        return self.chain.wrap(
            MethodInfo(method, False, False), getattr(self.servicers[service], name)
        )

    def start(self) -> None:
        if self.metrics_listener is not None:
            self.metrics_listener.start()
            logger.info("serving metrics on %s", self.metrics_listener.address)
        if self.request_log is not None:
            self.request_log.start()
        if self.audit is not None:
            self.audit.start()
        if self.mail is not None:
            self.mail.start()
        # Listening before the first call can cache anything.
        if self.invalidations is not None:
            self.invalidations.start()
        self.server.start()
        set_serving(self.health, True)
        if self.database is not None:
            self.database.start()

    def stop(self, grace: float | None) -> None:
        """Stop accepting calls, give in-flight ones `grace` seconds, then cancel the rest."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        # Only now is every completed call queued: write them all before returning.
        if self.request_log is not None:
            self.request_log.close()
        # Likewise every deferred audit event (no sign-in can queue one any more).
        if self.audit is not None:
            self.audit.close()
        # Queued messages stay in the database for the next start; only the one being sent
        # is waited for, within the grace.
        if self.mail is not None:
            self.mail.close() if grace is None else self.mail.close(grace)
        if self.database is not None:
            self.database.close()
        if self.invalidations is not None:
            self.invalidations.close()
        if self.metrics_listener is not None:
            self.metrics_listener.stop()
        if self.own_hasher is not None:
            self.own_hasher.close()
        if self.untrace_statements is not None:
            self.untrace_statements()
        # Last: every call's spans have ended; send what the batch still holds.
        if self.tracer_provider is not None:
            if self.own_tracer_provider:
                self.tracer_provider.shutdown()
            else:
                self.tracer_provider.force_flush()


def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    """Set the health of the server ("") and of every service."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for service in ("", *(s.full_name for s in methods.SERVICES)):
        health_servicer.set(service, status)


def wait_for_stop(stop: threading.Event, tick: Callable[[], None] = lambda: None) -> None:
    """Block the main thread until `stop` is set, typically by a SIGTERM/SIGINT handler,
    calling `tick` at each wake-up (the work a signal handler only asks for, such as a
    certificate reload: handlers themselves must stay trivial, since they can interrupt each
    other and anything the main thread holds).

    Python runs signal handlers on the main thread only, between bytecodes, while the kernel
    may deliver SIGTERM to any thread, grpcio's included; a main thread asleep in an untimed
    wait would then never run the handler. It wakes now and then instead."""
    while not stop.wait(0.5):
        tick()


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    """The grpc.server options; the benchmark's bare baseline server uses them too."""
    return [
        # grpcio enables SO_REUSEPORT by default, which lets a second server silently share
        # the port; a second start must fail instead. The workers of `serve --workers N` share
        # it on purpose, behind the supervisor's reservation (supervisor.py).
        ("grpc.so_reuseport", 0 if settings.worker_slot is None else 1),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_metadata_size", 16 * 1024),
    ]


def build_server(
    settings: Settings,
    sessions: Sessions,
    *,
    clock: Clock = system_clock,
    hasher: PasswordHasher | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    request_log: RequestLogWriter | None = None,
    tracer_provider: TracerProvider | None = None,
) -> App:
    """Build the server and bind it to settings.host:settings.port (0 picks a free port).

    `monotonic` drives the rate limiters and the log writer's schedule; `request_log` replaces
    the writer built from `sessions.engine` (tests use it to break or slow the log database).
    With REQUEST_LOG_ENABLED=false there is no writer: the logging stage only opens each call's
    record. `tracer_provider` turns tracing on with that provider (tests pass one with an
    in-memory exporter); without it, the settings' OTEL_* variables decide (tracing.py).

    Raises:
        BindError: the address is taken or invalid.
        SigningKeyError: SIGNING_KEY_SECRET does not decrypt the stored signing keys.
        TlsError: TLS_CERT_FILE/TLS_KEY_FILE/TLS_CLIENT_CA_FILE cannot be loaded.
    """
    # First: unreadable certificate files fail the start before any thread is running.
    tls = None
    if settings.tls_cert_file:
        tls = ServerCertificates(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        )
    # Access tokens: the signing keys, created on the first start (none with HS256).
    keys = None
    if settings.jwt_algorithm != "HS256":
        keys = KeyRing.from_settings(settings, sessions, clock)
        keys.start()
    own_hasher = None
    if hasher is None:
        hasher = own_hasher = PasswordHasher(
            settings.bcrypt_rounds,
            max_waiting=settings.bcrypt_max_waiting,
            nice=settings.bcrypt_nice,
        )
    audit = AuditWorker(
        sessions,
        retention_days=settings.audit_log_retention_days,
        clock=clock,
        monotonic=monotonic,
    )
    auth = AuthService(
        sessions,
        hasher,
        TokenCodec(settings, clock, keys),
        clock,
        token_cache_ttl=settings.token_cache_ttl,
        token_cache_max_entries=settings.token_cache_max_entries,
        refresh_reuse_grace_seconds=settings.refresh_reuse_grace_seconds,
        max_token_lifetime=settings.max_token_lifetime,
        introspection_organizations=settings.introspection_organizations,
        defer_audit=audit.defer,
        password_login=settings.password_login,
    )
    organizations = OrganizationService(
        sessions,
        clock,
        slug_redirect_days=settings.organization_slug_redirect_days,
        forget_credential=lambda account_id: auth.token_cache.forget(credential_id=account_id),
    )
    # What the token cache forgets and a rotation of the keys, told to the other processes.
    invalidations = open_channel(sessions.engine)
    if invalidations is not None:
        invalidations.attach(auth.token_cache, keys)
    device_logins = DeviceLogins(
        sessions,
        clock,
        auth.cli_tokens,
        CodeAttempts(
            *build_code_attempt_limiters(settings, monotonic, wall=lambda: clock().timestamp()),
            ipv6_prefix=settings.rate_limit_ipv6_prefix,
        ),
        client_ids=settings.device_client_ids,
        lifetime=settings.device_code_lifetime,
        interval=settings.device_poll_interval,
        public_url=settings.public_url or f"http://localhost:{settings.http_port}",
    )
    # Declared in the contracts; token authentication and both rate-limit stages read it.
    policies = methods.policies()
    public = methods.public_methods(policies)
    health_servicer = health.HealthServicer()
    # While the database is away, calls that need it answer UNAVAILABLE and health says
    # NOT_SERVING; the request log keeps its entries until it is back.
    database = DatabaseAvailability(
        sessions.engine, on_change=lambda available: set_serving(health_servicer, available)
    )
    if not settings.request_log_enabled:
        request_log = None
    elif request_log is None:
        request_log = RequestLogWriter(
            sessions.engine,
            retention_days=settings.request_log_retention_days,
            clock=clock,
            monotonic=monotonic,
            max_queue=settings.request_log_max_queue,
            on_error=database.notice,
            # A worker of `serve --workers N` spools each entry: SIGKILL loses none (spool.py).
            spool=(
                None
                if settings.worker_slot is None
                else RequestLogSpool(spool_directory(settings.data_dir), settings.worker_slot)
            ),
        )
    # Prometheus metrics (metrics.py): the logging stage counts each call; the rest is read
    # from the parts' own counters when Prometheus scrapes.
    metrics = None
    if settings.metrics_enabled:
        metrics = Metrics(policy_resolver())
        metrics.watch(
            request_log=request_log,
            engine=sessions.engine,
            hasher=hasher,
            token_cache=auth.token_cache,
        )
    per_ip_limit, per_user_limit = build_rate_limit_stages(
        settings, public, monotonic, wall=lambda: clock().timestamp()
    )
    # OpenTelemetry (tracing.py): off, neither a stage nor an engine hook exists.
    own_tracer_provider = False
    if tracer_provider is None and settings.tracing is not None:
        tracer_provider = build_tracer_provider(settings.tracing)
        own_tracer_provider = True
        logger.info(
            "tracing on: spans to %s",
            "standard output"
            if settings.tracing.exporter == "console"
            else without_credentials(settings.tracing.endpoint),
        )
    tracing_stages: list[MethodInterceptor] = []
    untrace_statements = None
    if tracer_provider is not None:
        tracing_stages.append(
            TracingInterceptor(
                tracer_provider.get_tracer("luman.server"), skip=methods.is_infrastructure
            )
        )
        untrace_statements = trace_statements(sessions.engine)
    # The chain, outermost first. Every call crosses these stages in this order (chain.py):
    chain = InterceptorChain(
        [
            # Opens the call's record (client address, credentials) and, once the call is
            # over, writes its request-log entry: it sees the final status of every call.
            RequestLoggingInterceptor(
                request_log.submit if request_log is not None else None,
                CallerResolver(parse_trusted_proxies(settings.trusted_proxies)),
                clock=clock,
                skip=methods.is_infrastructure,
                observe=None if metrics is None else metrics.method,
            ),
            # With tracing on: the call's SERVER span, a child of the caller's traceparent;
            # inside the logging stage, so its trace id reaches the call's log row and line.
            *tracing_stages,
            # Turns whatever the stages below raise into a status with ErrorInfo.
            ErrorMappingInterceptor(translate=database.translate),
            # Sign-ins, public calls and calls without credentials per client address, before
            # anything else runs; a call whose token the next stage rejects, when it comes back.
            per_ip_limit,
            # The one place a token is verified; sets the principal, refuses non-public calls
            # without a valid token, and tokens without the scope the RPC declares.
            TokenAuthInterceptor(
                auth.verify_token,
                public,
                methods.is_infrastructure,
                methods.required_scopes(policies),
                methods.service_methods(policies),
                # TLS_CLIENT_CA_FILE: a client certificate naming a service account is its
                # credential on calls without a token (auth/client_certificates.py).
                verify_certificate=(
                    ClientCertificates(sessions, auth.token_cache, clock).verify
                    if tls is not None and tls.client_ca
                    else None
                ),
            ),
            # Calls with a valid token, per user.
            per_user_limit,
        ]
    )
    # Sign-ins hold a worker thread while they hash or wait for a hash slot, at most
    # hasher.threads_held of them (auth/passwords.py); on top of those, GRPC_MAX_WORKERS threads
    # stay for every other call. Threads start only when calls need them.
    executor = ThreadPoolExecutor(
        max_workers=settings.max_workers + hasher.threads_held, thread_name_prefix="rpc"
    )
    server = grpc.server(
        executor,
        interceptors=[chain],
        options=server_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    # Sign-in through identity providers (federation/): IDENTITY_PROVIDERS.
    provider_logins = ProviderLogins(
        sessions,
        clock,
        hasher,
        auth,
        build_adapters(settings.identity_providers, clock=clock),
        settings.identity_providers,
        ttl=settings.provider_login_ttl,
        password_login=settings.password_login,
        public_url=settings.public_url or f"http://localhost:{settings.http_port}",
        defer_audit=audit.defer,
    )
    auth_servicer = AuthServicer(auth, device_logins, provider_logins)
    invitations = InvitationService(
        sessions,
        clock,
        ttl=settings.invitation_ttl,
        max_pending=settings.max_pending_invitations,
    )
    organization_servicer = OrganizationServicer(organizations, auth.service_accounts, invitations)
    config_servicer = OrganizationConfigServicer(
        OrganizationConfigService(sessions, clock), settings.organization_config_max_bytes
    )
    config_service_pb2_grpc.add_OrganizationConfigServiceServicer_to_server(config_servicer, server)
    audit_servicer = AuditServicer(AuditService(sessions, clock))
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(auth_servicer, server)
    audit_service_pb2_grpc.add_AuditServiceServicer_to_server(audit_servicer, server)
    organization_service_pb2_grpc.add_OrganizationServiceServicer_to_server(
        organization_servicer, server
    )
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
        if tls is not None:
            port = server.add_secure_port(address, tls.grpc_credentials())
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise BindError(f"cannot listen on {address}: is another server using the port?") from exc
    if port == 0:
        raise BindError(f"cannot listen on {address}: is another server using the port?")
    # MTLS_PORT: the same server, for callers with a client certificate (required there).
    mtls_port = None
    if tls is not None and settings.mtls_port is not None:
        mtls_address = f"{host}:{settings.mtls_port}"
        try:
            mtls_port = server.add_secure_port(mtls_address, tls.grpc_mtls_credentials())
        except RuntimeError:
            mtls_port = 0
        if mtls_port == 0:
            server.stop(None)
            raise BindError(
                f"cannot listen on {mtls_address} (MTLS_PORT): is another server using the port?"
            )
    metrics_listener = None
    if metrics is not None and settings.metrics_port is not None:
        try:
            metrics_listener = MetricsListener(
                settings.metrics_host, settings.metrics_port, metrics.exposition
            )
        except OSError as exc:
            server.stop(None)
            raise BindError(
                f"cannot listen on {settings.metrics_host}:{settings.metrics_port} "
                "(METRICS_HOST:METRICS_PORT): "
                f"is another server using the port? ({exc})"
            ) from exc
    return App(
        server=server,
        port=port,
        mtls_port=mtls_port,
        health=health_servicer,
        auth=auth,
        chain=chain,
        servicers={
            auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name: auth_servicer,
            organization_service_pb2.DESCRIPTOR.services_by_name[
                "OrganizationService"
            ].full_name: organization_servicer,
            config_service_pb2.DESCRIPTOR.services_by_name[
                "OrganizationConfigService"
            ].full_name: config_servicer,
            audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name: audit_servicer,
        },
        executor=executor,
        request_log=request_log,
        own_hasher=own_hasher,
        database=database,
        keys=keys,
        device_logins=device_logins,
        provider_logins=provider_logins,
        clock=clock,
        audit=audit,
        metrics=metrics,
        metrics_listener=metrics_listener,
        tls=tls,
        tracer_provider=tracer_provider,
        own_tracer_provider=own_tracer_provider,
        untrace_statements=untrace_statements,
        invalidations=invalidations,
        mail=MailWorker(
            sessions,
            build_transport(settings),
            build_renderers(settings),
            settings.mail_from,
            clock,
        ),
    )
