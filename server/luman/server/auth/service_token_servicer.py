"""CreateServiceToken and IntrospectToken over gRPC: AuthServicer inherits these methods.

Kept apart from servicer.py so service credentials read as one piece; the rules are in
auth/service_accounts.py and auth/introspection.py.
"""

from __future__ import annotations

import grpc

from luman.auth.v1 import auth_service_pb2
from luman.server.auth.service import AuthService
from luman.server.convert import write_timestamp
from luman.server.validation import Violations, check_token


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
        v = Violations()
        check_token(v, "token", request.token)
        v.raise_if_any()
        found = self._service.introspector.introspect(request.token)
        if found is None:
            # Not active, for whatever reason: `active: false` and nothing else.
            return auth_service_pb2.IntrospectTokenResponse()
        response = auth_service_pb2.IntrospectTokenResponse(
            active=True,
            token_kind=found.kind,
            subject=str(found.subject),
            scopes=sorted(found.scopes),
            organization_id="" if found.organization_id is None else str(found.organization_id),
            kid=found.kid or "",
        )
        write_timestamp(response.issue_time, found.issue_time)
        if found.expire_time is not None:
            write_timestamp(response.expire_time, found.expire_time)
        return response
