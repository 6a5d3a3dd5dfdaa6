from __future__ import annotations

from luman.auth.v1 import auth_pb2
from luman.client import token_format
from luman.server.auth.service import TokenPair
from luman.server.auth.token_checks import UserRecord
from luman.server.convert import timestamp, write_timestamp
from luman.server.db.models import CliToken, User


def write_user(target: auth_pb2.User, user: User | UserRecord) -> None:
    """Fill `target` (a response's field, typically) in place: building a User and copying it
    into the response cost GetMe 2.8 against 1.6 µs here."""
    target.id = str(user.id)
    target.email = user.email
    target.name = user.name
    write_timestamp(target.create_time, user.create_time)
    target.email_verified = user.email_verify_time is not None


def user_to_proto(user: User | UserRecord) -> auth_pb2.User:
    message = auth_pb2.User()
    write_user(message, user)
    return message


def token_pair_to_proto(tokens: TokenPair) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=tokens.access.token,
        access_token_expire_time=timestamp(tokens.access.expire_time),
        refresh_token=tokens.refresh.token,
        refresh_token_expire_time=timestamp(tokens.refresh.expire_time),
    )


def cli_token_to_proto(token: CliToken) -> auth_pb2.CliToken:
    message = auth_pb2.CliToken(
        id=str(token.id), name=token.name, create_time=timestamp(token.create_time)
    )
    if token.last_use_time is not None:
        message.last_use_time.CopyFrom(timestamp(token.last_use_time))
    # Never the secret or its hash: a listing identifies a token by name and hint only.
    message.scopes.extend(sorted(token.scopes.split()))
    if token.expire_time is not None:
        write_timestamp(message.expire_time, token.expire_time)
    message.last_use_ip = token.last_use_ip or ""
    message.hint = token.hint or token_format.PREFIX
    return message
