"""AuthService over gRPC: checks the request's shape, calls AuthService, converts the result."""

from __future__ import annotations

import grpc

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.principal import current_principal
from luman.server.auth import cli_token_requests, convert, jwks
from luman.server.auth.account_servicer import AccountRpcs
from luman.server.auth.device_login_servicer import DeviceLoginRpcs
from luman.server.auth.device_logins import DeviceLogins
from luman.server.auth.email_servicer import EmailRpcs
from luman.server.auth.service import AuthService
from luman.server.auth.service_token_servicer import ServiceTokenRpcs
from luman.server.auth.session_servicer import SessionRpcs, current_caller
from luman.server.federation.logins import ProviderLogins
from luman.server.federation.servicer import ProviderLoginRpcs
from luman.server.validation import (
    Violations,
    check_email,
    check_name,
    check_password,
    check_token,
    check_uuid,
)


class AuthServicer(
    SessionRpcs,
    AccountRpcs,
    EmailRpcs,
    ServiceTokenRpcs,
    DeviceLoginRpcs,
    ProviderLoginRpcs,
    auth_service_pb2_grpc.AuthServiceServicer,
):
    def __init__(
        self, service: AuthService, device_logins: DeviceLogins, provider_logins: ProviderLogins
    ) -> None:
        self._service = service
        self._provider_logins = provider_logins
        self._session_service = service.session_service
        self._account_service = service.accounts
        self._email_codes = service.email_codes
        self._device_logins = device_logins

    def Register(
        self, request: auth_service_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.RegisterResponse:
        v = Violations()
        email = check_email(v, "email", request.email)
        check_password(v, "password", request.password)
        name = check_name(v, "name", request.name)
        v.raise_if_any()
        signed_in = self._service.register(email, request.password, name, context, current_caller())
        return auth_service_pb2.RegisterResponse(
            user=convert.user_to_proto(signed_in.user),
            tokens=convert.token_pair_to_proto(signed_in.tokens),
        )

    def Login(
        self, request: auth_service_pb2.LoginRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.LoginResponse:
        v = Violations()
        email = check_email(v, "email", request.email)
        check_password(v, "password", request.password)
        v.raise_if_any()
        signed_in = self._service.login(email, request.password, context, current_caller())
        tokens = convert.token_pair_to_proto(signed_in.tokens)
        return auth_service_pb2.LoginResponse(
            user=convert.user_to_proto(signed_in.user),
            tokens=tokens,
            access_token_expire_time=tokens.access_token_expire_time,
        )

    def RefreshToken(
        self, request: auth_service_pb2.RefreshTokenRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.RefreshTokenResponse:
        v = Violations()
        check_token(v, "refresh_token", request.refresh_token)
        v.raise_if_any()
        tokens = self._service.refresh(request.refresh_token)
        return auth_service_pb2.RefreshTokenResponse(tokens=convert.token_pair_to_proto(tokens))

    def CliLogin(
        self, request: auth_service_pb2.CliLoginRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.CliLoginResponse:
        v = Violations()
        email = check_email(v, "email", request.email)
        check_password(v, "password", request.password)
        token_name = check_name(v, "token_name", request.token_name, required=False)
        v.raise_if_any()
        signed_in = self._service.cli_login(email, request.password, token_name, context)
        return auth_service_pb2.CliLoginResponse(
            user=convert.user_to_proto(signed_in.user),
            token=signed_in.secret,
            cli_token=convert.cli_token_to_proto(signed_in.token),
        )

    def CliLogout(
        self, request: auth_service_pb2.CliLogoutRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.CliLogoutResponse:
        self._service.cli_logout(current_principal())
        return auth_service_pb2.CliLogoutResponse()

    def GetMe(
        self, request: auth_service_pb2.GetMeRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.GetMeResponse:
        user = self._service.get_me(current_principal())
        response = auth_service_pb2.GetMeResponse()
        convert.write_user(response.user, user)
        return response

    def GetJwks(
        self, request: auth_service_pb2.GetJwksRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.GetJwksResponse:
        # Verifiers and HTTP caches keep the set for max-age (the gateway adds an ETag).
        context.send_initial_metadata(jwks.CACHE_METADATA)
        return jwks.to_proto(self._service.jwks())

    # Personal (CLI) tokens: the shape checks live in cli_token_requests.py.

    def CreateCliToken(
        self, request: auth_service_pb2.CreateCliTokenRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.CreateCliTokenResponse:
        create = cli_token_requests.create_request(request)
        issued = self._service.cli_tokens.create(
            current_principal(), create.name, create.scopes, create.expire_time, create.ttl
        )
        return auth_service_pb2.CreateCliTokenResponse(
            token=issued.secret, cli_token=convert.cli_token_to_proto(issued.token)
        )

    def ListCliTokens(
        self, request: auth_service_pb2.ListCliTokensRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.ListCliTokensResponse:
        principal = current_principal()
        scope = f"cli-tokens:{principal.user_id}"
        page_size, after = cli_token_requests.page_request(request, scope)
        page = self._service.cli_tokens.list(principal, after, page_size)
        return auth_service_pb2.ListCliTokensResponse(
            cli_tokens=[convert.cli_token_to_proto(token) for token in page.items],
            next_page_token=cli_token_requests.page_token(page.next_key, scope),
        )

    def RevokeCliToken(
        self, request: auth_service_pb2.RevokeCliTokenRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.RevokeCliTokenResponse:
        v = Violations()
        token_id = check_uuid(v, "token_id", request.token_id)
        v.raise_if_any()
        assert token_id is not None
        self._service.cli_tokens.revoke(current_principal(), token_id)
        return auth_service_pb2.RevokeCliTokenResponse()

    def RevokeAllCliTokens(
        self, request: auth_service_pb2.RevokeAllCliTokensRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.RevokeAllCliTokensResponse:
        count = self._service.cli_tokens.revoke_all(current_principal())
        return auth_service_pb2.RevokeAllCliTokensResponse(revoked_count=count)
