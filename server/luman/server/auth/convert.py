from __future__ import annotations

from luman.auth.v1 import auth_pb2
from luman.server.auth.service import TokenPair
from luman.server.auth.token_checks import UserRecord
from luman.server.convert import timestamp
from luman.server.db.models import CliToken, User


def user_to_proto(user: User | UserRecord) -> auth_pb2.User:
    return auth_pb2.User(
        id=str(user.id), email=user.email, name=user.name, create_time=timestamp(user.create_time)
    )


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
    return message
