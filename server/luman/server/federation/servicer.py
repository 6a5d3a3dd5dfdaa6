"""The identity-provider RPCs over gRPC: AuthServicer inherits these methods.

Shape checks here; the rules are in federation/logins.py.
"""

from __future__ import annotations

import grpc

from luman.auth.v1 import auth_pb2, auth_service_pb2
from luman.interceptors.principal import current_principal
from luman.server.auth import convert
from luman.server.auth.device_logins import normalize_user_code
from luman.server.auth.session_servicer import current_caller
from luman.server.convert import write_timestamp
from luman.server.federation.logins import LinkedIdentity, LinkRequired, ProviderLogins, SignedIn
from luman.server.validation import Violations, check_password, check_uuid

# Well above what providers send (a GitHub code is 20 characters, Google's about 75) and
# below anything that could hurt: the values are only hashed or forwarded.
MAX_STATE = 200
MAX_CODE = 2048
MAX_PROVIDER = 32
MAX_ERROR = 200
MAX_ERROR_DESCRIPTION = 1000
MAX_LINK_TOKEN = 200


def _check(v: Violations, field: str, value: str, most: int, *, required: bool) -> str:
    if required and not value:
        v.add(field, "is required")
    elif len(value) > most:
        v.add(field, f"must be at most {most} characters")
    elif not value.isascii() or not value.isprintable():
        v.add(field, "must be printable ASCII")
    return value


def _user_code(v: Violations, value: str) -> str:
    if not value.strip():
        return ""
    code = normalize_user_code(value)
    if code is None:
        v.add("user_code", "must be the 8 letters of a device login's code")
        return ""
    return code


def identity_to_proto(linked: LinkedIdentity) -> auth_pb2.Identity:
    identity = linked.identity
    message = auth_pb2.Identity(
        id=str(identity.id),
        provider=identity.provider,
        provider_display_name=linked.display_name,
        email=identity.email,
        username=identity.username,
    )
    write_timestamp(message.create_time, identity.create_time)
    if identity.last_sign_in_time is not None:
        write_timestamp(message.last_sign_in_time, identity.last_sign_in_time)
    return message


class ProviderLoginRpcs:
    _provider_logins: ProviderLogins

    def ListIdentityProviders(
        self,
        request: auth_service_pb2.ListIdentityProvidersRequest,
        context: grpc.ServicerContext,
    ) -> auth_service_pb2.ListIdentityProvidersResponse:
        logins = self._provider_logins
        return auth_service_pb2.ListIdentityProvidersResponse(
            providers=[
                auth_pb2.IdentityProvider(
                    id=config.id, display_name=config.display_name, kind=config.kind
                )
                for config in logins.providers
            ],
            password_login=logins.password_login,
        )

    def StartProviderLogin(
        self, request: auth_service_pb2.StartProviderLoginRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.StartProviderLoginResponse:
        v = Violations()
        provider = _check(v, "provider", request.provider, MAX_PROVIDER, required=True)
        user_code = _user_code(v, request.user_code)
        v.raise_if_any()
        started = self._provider_logins.start(provider, user_code, current_caller())
        response = auth_service_pb2.StartProviderLoginResponse(
            authorization_url=started.authorization_url, state=started.state
        )
        write_timestamp(response.expire_time, started.expire_time)
        return response

    def CompleteProviderLogin(
        self,
        request: auth_service_pb2.CompleteProviderLoginRequest,
        context: grpc.ServicerContext,
    ) -> auth_service_pb2.CompleteProviderLoginResponse:
        v = Violations()
        provider = _check(v, "provider", request.provider, MAX_PROVIDER, required=True)
        state = _check(v, "state", request.state, MAX_STATE, required=True)
        error = _check(v, "error", request.error, MAX_ERROR, required=False)
        code = _check(v, "code", request.code, MAX_CODE, required=not error)
        # Free text from the provider, recorded only: bounded, not judged.
        description = request.error_description[:MAX_ERROR_DESCRIPTION]
        v.raise_if_any()
        outcome = self._provider_logins.complete(
            provider, state, code, error, description, current_caller()
        )
        response = auth_service_pb2.CompleteProviderLoginResponse(user_code=outcome.user_code)
        if isinstance(outcome, LinkRequired):
            response.link_required.link_token = outcome.link_token
            response.link_required.email = outcome.email
            write_timestamp(response.link_required.expire_time, outcome.expire_time)
        else:
            _write_sign_in(response.sign_in, outcome)
        return response

    def LinkProviderIdentity(
        self,
        request: auth_service_pb2.LinkProviderIdentityRequest,
        context: grpc.ServicerContext,
    ) -> auth_service_pb2.LinkProviderIdentityResponse:
        v = Violations()
        link_token = _check(v, "link_token", request.link_token, MAX_LINK_TOKEN, required=True)
        # The rules every password met when it was set: one outside them cannot be right.
        check_password(v, "password", request.password)
        v.raise_if_any()
        signed_in = self._provider_logins.link(
            link_token, request.password, context, current_caller()
        )
        return auth_service_pb2.LinkProviderIdentityResponse(
            user=convert.user_to_proto(signed_in.user),
            tokens=convert.token_pair_to_proto(signed_in.tokens),
            identity=identity_to_proto(
                LinkedIdentity(
                    signed_in.identity,
                    self._provider_logins.display_name(signed_in.identity.provider),
                )
            ),
            user_code=signed_in.user_code,
        )

    def ListIdentities(
        self, request: auth_service_pb2.ListIdentitiesRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.ListIdentitiesResponse:
        identities = self._provider_logins.list(current_principal())
        return auth_service_pb2.ListIdentitiesResponse(
            identities=[identity_to_proto(linked) for linked in identities]
        )

    def UnlinkIdentity(
        self, request: auth_service_pb2.UnlinkIdentityRequest, context: grpc.ServicerContext
    ) -> auth_service_pb2.UnlinkIdentityResponse:
        v = Violations()
        identity_id = check_uuid(v, "identity_id", request.identity_id)
        v.raise_if_any()
        assert identity_id is not None
        self._provider_logins.unlink(current_principal(), identity_id)
        return auth_service_pb2.UnlinkIdentityResponse()


def _write_sign_in(target: auth_service_pb2.ProviderSignIn, signed_in: SignedIn) -> None:
    convert.write_user(target.user, signed_in.user)
    target.tokens.CopyFrom(convert.token_pair_to_proto(signed_in.tokens))
    target.account_created = signed_in.account_created
