"""SendVerificationEmail, VerifyEmail, RequestPasswordReset and ResetPassword over gRPC:
AuthServicer inherits these methods. The rules are in auth/email_codes.py."""

from __future__ import annotations

import grpc

from luman.auth.v1 import auth_service_pb2
from luman.interceptors.principal import current_principal
from luman.server.auth import convert
from luman.server.auth.device_logins import USER_CODE_ALPHABET, USER_CODE_LENGTH
from luman.server.auth.email_codes import EmailCodes, Proof
from luman.server.validation import Violations, check_email, check_password, check_token

MAX_CODE_LENGTH = 32  # "BCDF-GHJK" with room for spaces


def check_proof(
    v: Violations,
    request: auth_service_pb2.VerifyEmailRequest | auth_service_pb2.ResetPasswordRequest,
) -> Proof:
    """A token, or an email and a code: exactly one of the two ways."""
    if request.token:
        if request.email or request.code:
            v.add("token", "set either token, or email and code, not both")
        return Proof(token=check_token(v, "token", request.token))
    if not request.email and not request.code:
        v.add("token", "is required (or email and code)")
        return Proof()
    email = check_email(v, "email", request.email)
    code = "".join(request.code.split()).replace("-", "").upper()
    if not code:
        v.add("code", "is required with email")
    elif len(request.code) > MAX_CODE_LENGTH or len(code) != USER_CODE_LENGTH:
        v.add("code", f"must be {USER_CODE_LENGTH} letters, like XXXX-XXXX")
    elif any(c not in USER_CODE_ALPHABET for c in code):
        v.add("code", "has a character no code has")
    return Proof(email=email, code=code)


class EmailRpcs:
    """The email RPCs of AuthServicer; `_email_codes` is set by its constructor."""

    _email_codes: EmailCodes

    def SendVerificationEmail(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.SendVerificationEmailRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.SendVerificationEmailResponse:
        email = self._email_codes.send_verification(current_principal())
        return auth_service_pb2.SendVerificationEmailResponse(email=email)

    def VerifyEmail(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.VerifyEmailRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.VerifyEmailResponse:
        v = Violations()
        proof = check_proof(v, request)
        v.raise_if_any()
        user = self._email_codes.verify(proof)
        response = auth_service_pb2.VerifyEmailResponse()
        convert.write_user(response.user, user)
        return response

    def RequestPasswordReset(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.RequestPasswordResetRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.RequestPasswordResetResponse:
        v = Violations()
        email = check_email(v, "email", request.email)
        v.raise_if_any()
        self._email_codes.request_reset(email)
        return auth_service_pb2.RequestPasswordResetResponse()

    def ResetPassword(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.ResetPasswordRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.ResetPasswordResponse:
        v = Violations()
        proof = check_proof(v, request)
        check_password(v, "new_password", request.new_password)
        v.raise_if_any()
        reset = self._email_codes.reset(
            proof, request.new_password, request.revoke_cli_tokens, context
        )
        return auth_service_pb2.ResetPasswordResponse(
            revoked_sessions=reset.revoked_sessions,
            revoked_cli_tokens=reset.revoked_cli_tokens,
        )
