"""AuthService over gRPC: checks the request's shape, calls AuthService, converts the result."""

from __future__ import annotations

import grpc

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.interceptors.principal import current_principal
from luman.server.auth import convert
from luman.server.auth.service import AuthService
from luman.server.validation import (
    Violations,
    check_email,
    check_name,
    check_password,
    check_token,
)


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, service: AuthService) -> None:
        self._service = service

    def Register(
        self, request: auth_service_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.RegisterResponse:
        v = Violations()
        email = check_email(v, "email", request.email)
        check_password(v, "password", request.password)
        name = check_name(v, "name", request.name)
        v.raise_if_any()
        signed_in = self._service.register(email, request.password, name, context)
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
        signed_in = self._service.login(email, request.password, context)
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
