"""Local stand-ins for notification services: webhooks (Slack and generic) and SMTP."""

from __future__ import annotations

import email
import email.policy
import json
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from tests.support.net import LocalServer, QuietHandler, free_port


@dataclass(frozen=True)
class WebhookPost:
    path: str
    headers: dict[str, str]
    payload: Any


class WebhookReceiver(LocalServer):
    """Records the JSON posted to it, with the headers, and answers ``200 ok``."""

    path = "/hooks/budget-exporter"

    def __init__(self) -> None:
        self._posts: list[WebhookPost] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = body.decode(errors="replace")
                with receiver._lock:
                    receiver._posts.append(WebhookPost(self.path, dict(self.headers), payload))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def posts(self) -> list[WebhookPost]:
        with self._lock:
            return list(self._posts)


class SlackReceiver(WebhookReceiver):
    """A Slack incoming webhook: answers as Slack does (``200 ok``), at a Slack-shaped path."""

    path = "/services/T000/B000/XXXX"


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, subtype: str) -> str:
        """The decoded ``text/<subtype>`` part (``plain`` or ``html``), or ``""``."""
        part = self.message.get_body(preferencelist=(subtype,))
        return "" if part is None else str(part.get_content())


class SmtpRecorder:
    """An SMTP server on 127.0.0.1 that keeps every mail and every login it is sent.

    It offers AUTH PLAIN without TLS (Go's SMTP client allows that only to
    127.0.0.1), accepting any credentials and recording them, so a test can check
    which password a client read from its secret file.  AUTH LOGIN is not offered:
    aiosmtpd's LOGIN prompts are not the usual ``Username:``/``Password:`` that
    Alertmanager's client expects.
    """

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        self._mails: list[ReceivedMail] = []
        self._logins: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                with recorder._lock:
                    recorder._mails.append(
                        ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), message)
                    )
                return "250 Message accepted"

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            if isinstance(data, LoginPassword):
                with recorder._lock:
                    recorder._logins.append((data.login.decode(), data.password.decode()))
            return AuthResult(success=True)

        self.port = free_port()
        self.host = "127.0.0.1"
        self._controller = Controller(
            Handler(),
            hostname=self.host,
            port=self.port,
            authenticator=authenticator,
            auth_require_tls=False,
            auth_exclude_mechanism=["LOGIN"],
        )

    def start(self) -> SmtpRecorder:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def mails(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._mails)

    @property
    def logins(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._logins)
