"""Mail through the whole server: Register answers at once whatever the mail server does, and
its verification message reaches the person even across a mail-server outage and a restart of
the Luman server in between."""

from __future__ import annotations

import dataclasses
import socket
import time

import grpc

from luman.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from luman.server.app import build_server
from luman.server.auth.passwords import PasswordHasher
from luman.server.config import Settings
from luman.server.db.session import Sessions
from tests.mail_support import Mailbox, code_of
from tests.support import FakeClock, bearer, register, unique_email


def test_a_message_queued_while_mail_is_down_arrives_after_a_restart(
    settings: Settings,
    sessions: Sessions,
    clock: FakeClock,
    hasher: PasswordHasher,
    mailbox: Mailbox,
) -> None:
    # A mail server that accepts connections and never answers: the worst kind of down.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    hanging = dataclasses.replace(settings, smtp_url=f"smtp://127.0.0.1:{silent.getsockname()[1]}")
    first = build_server(hanging, sessions, clock=clock, hasher=hasher)
    first.start()
    email = unique_email("outage")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
            started = time.monotonic()
            register(auth_service_pb2_grpc.AuthServiceStub(channel), email=email)
            # The RPC did not wait for the mail server, which would have taken the SMTP
            # timeout (20 s).
            assert time.monotonic() - started < 5
    finally:
        silent.close()  # resets the worker's connection: its attempt fails at once
        first.stop(None)

    clock.advance(minutes=1)  # past the first retry's delay
    second = build_server(
        dataclasses.replace(settings, smtp_url=mailbox.url), sessions, clock=clock, hasher=hasher
    )
    second.start()
    try:
        mail = mailbox.wait_for(email, "verify")
        with grpc.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            auth = auth_service_pb2_grpc.AuthServiceStub(channel)
            verified = auth.VerifyEmail(
                auth_service_pb2.VerifyEmailRequest(email=email, code=code_of(mail))
            )
            assert verified.user.email_verified
            signed_in = auth.Login(
                auth_service_pb2.LoginRequest(email=email, password="correct horse battery")
            )
            me = auth.GetMe(
                auth_service_pb2.GetMeRequest(), metadata=bearer(signed_in.tokens.access_token)
            )
            assert me.user.email_verified
    finally:
        second.stop(None)
    assert len(mailbox.to(email)) == 1
