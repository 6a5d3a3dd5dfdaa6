"""CreateServiceToken and IntrospectToken over gRPC: AuthServicer inherits these methods.

Kept apart from servicer.py so service credentials read as one piece; the rules are in
auth/service_accounts.py and auth/introspection.py.
"""

from __future__ import annotations

import grpc

from luman.auth.v1 import auth_service_pb2
from luman.interceptors.principal import current_principal
from luman.server.auth.service import AuthService
from luman.server.convert import write_timestamp
from luman.server.validation import MAX_TOKEN_LENGTH, Violations, check_token


class ServiceTokenRpcs:
    _service: AuthService

    def CreateServiceToken(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.CreateServiceTokenRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.CreateServiceTokenResponse:
        v = Violations()
        check_token(v, "secret", request.secret)
        v.raise_if_any()
        issued = self._service.service_accounts.exchange(request.secret)
        response = auth_service_pb2.CreateServiceTokenResponse(
            access_token=issued.token.token,
            token_type="Bearer",  # noqa: S106 - the scheme, not a secret
            scopes=sorted(issued.scopes),
        )
        write_timestamp(response.access_token_expire_time, issued.token.expire_time)
        return response

    def IntrospectToken(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.IntrospectTokenRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.IntrospectTokenResponse:
        # The operator's list, as it is now: it may have changed since the account was made.
        self._service.service_accounts.introspection.check_caller(
            current_principal().organization_id
        )
        if not request.token:
            v = Violations()
            v.add("token", "is required")
            v.raise_if_any()
        # RFC 7662: a malformed token is one more inactive token, a too-long one included; no
        # Luman token is that long, so it is answered without being read.
        if len(request.token) > MAX_TOKEN_LENGTH:
            return auth_service_pb2.IntrospectTokenResponse()
        found = self._service.introspector.introspect(request.token)
        if found is None:
            # Not active, for whatever reason: `active: false` and nothing else.
            return auth_service_pb2.IntrospectTokenResponse()
        # Fields with presence (optional): what a token lacks is absent, not "" (JSON too).
        response = auth_service_pb2.IntrospectTokenResponse(
            active=True,
            token_kind=found.kind,
            subject=str(found.subject),
            scopes=sorted(found.scopes),
        )
        if found.organization_id is not None:
            response.organization_id = str(found.organization_id)
        if found.kid:
            response.kid = found.kid
        write_timestamp(response.issue_time, found.issue_time)
        if found.expire_time is not None:
            write_timestamp(response.expire_time, found.expire_time)
        return response
