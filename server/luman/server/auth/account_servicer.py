"""UpdateMe, ChangePassword and DeleteMe over gRPC: AuthServicer inherits these methods.

Kept apart from servicer.py so the account feature reads as one piece; the rules are in
auth/accounts.py.
"""

from __future__ import annotations

import grpc

from luman.auth.v1 import auth_service_pb2
from luman.interceptors.principal import current_principal
from luman.server.auth import convert
from luman.server.auth.accounts import AccountService
from luman.server.validation import Violations, check_name, check_password

# AIP-134: the fields UpdateMe may change; "*" means all of them.
UPDATABLE_FIELDS = ("name",)
_READ_ONLY_FIELDS = frozenset({"id", "email", "create_time"})


def _check_required(v: Violations, field: str, value: str) -> None:
    """A current password is only ever compared: required, and no longer than any password
    can be (a longer one is wrong without spending a hash on it)."""
    if not value:
        v.add(field, "is required")
    else:
        check_password(v, field, value)


def update_paths(v: Violations, request: auth_service_pb2.UpdateMeRequest) -> set[str]:
    """The fields to change: the mask's paths, or (AIP-134) with an empty mask, the fields set
    in `user`. Unknown and read-only paths are violations of update_mask."""
    if not request.HasField("update_mask") or not request.update_mask.paths:
        paths = {field for field in UPDATABLE_FIELDS if getattr(request.user, field)}
        if not paths:
            v.add("user", f"sets no field to change (updatable: {', '.join(UPDATABLE_FIELDS)})")
        return paths
    paths = set()
    for path in request.update_mask.paths:
        if path == "*":
            paths.update(UPDATABLE_FIELDS)
        elif path in UPDATABLE_FIELDS:
            paths.add(path)
        elif path in _READ_ONLY_FIELDS:
            v.add("update_mask", f"{path!r} cannot be changed")
        else:
            v.add(
                "update_mask",
                f"unknown field {path!r} (updatable: {', '.join(UPDATABLE_FIELDS)})",
            )
    return paths


class AccountRpcs:
    """The account RPCs of AuthServicer; `_account_service` is set by its constructor."""

    _account_service: AccountService

    def UpdateMe(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.UpdateMeRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.UpdateMeResponse:
        v = Violations()
        paths = update_paths(v, request)
        name = check_name(v, "user.name", request.user.name) if "name" in paths else None
        v.raise_if_any()
        user = self._account_service.update(current_principal(), name)
        response = auth_service_pb2.UpdateMeResponse()
        convert.write_user(response.user, user)
        return response

    def ChangePassword(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.ChangePasswordRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.ChangePasswordResponse:
        v = Violations()
        _check_required(v, "current_password", request.current_password)
        check_password(v, "new_password", request.new_password)
        v.raise_if_any()
        changed = self._account_service.change_password(
            current_principal(),
            request.current_password,
            request.new_password,
            request.revoke_cli_tokens,
            context,
        )
        return auth_service_pb2.ChangePasswordResponse(
            revoked_session_count=changed.revoked_sessions,
            revoked_cli_token_count=changed.revoked_cli_tokens,
        )

    def DeleteMe(  # noqa: N802 - grpc names the methods
        self, request: auth_service_pb2.DeleteMeRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.DeleteMeResponse:
        v = Violations()
        _check_required(v, "password", request.password)
        v.raise_if_any()
        self._account_service.delete(current_principal(), request.password, context)
        return auth_service_pb2.DeleteMeResponse()
