"""Results of the account calls (UpdateMe, ChangePassword, DeleteMe, ResetPassword)."""

from __future__ import annotations

import dataclasses

from luman.auth.v1 import auth_service_pb2


@dataclasses.dataclass(frozen=True)
class PasswordChange:
    """What ChangePassword revoked: the caller's other sessions, and with revoke_cli_tokens
    its other personal (CLI) tokens."""

    revoked_sessions: int
    revoked_cli_tokens: int

    @classmethod
    def from_proto(cls, response: auth_service_pb2.ChangePasswordResponse) -> PasswordChange:
        return cls(response.revoked_session_count, response.revoked_cli_token_count)


@dataclasses.dataclass(frozen=True)
class PasswordReset:
    """What ResetPassword revoked: every session of the account, and with revoke_cli_tokens
    every personal (CLI) token."""

    revoked_sessions: int
    revoked_cli_tokens: int

    @classmethod
    def from_proto(cls, response: auth_service_pb2.ResetPasswordResponse) -> PasswordReset:
        return cls(response.revoked_sessions, response.revoked_cli_tokens)
