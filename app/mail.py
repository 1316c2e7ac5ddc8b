"""One-time step-up codes by email (SMTP): the `CodeSender` port.

The code goes to the owner's recovery address of record, a channel outside the chat account an
attacker may hold. The standard library's SMTP client runs in a worker thread, bounded by a
timeout; the message and the code are never logged. Any error means "not sent": the service
then withdraws the code, so a mail server outage never counts against the owner.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

from pydantic import SecretStr

from app.domain.models import Request


@dataclass(frozen=True)
class SmtpCodeSender:
    """Sends codes through one SMTP server (STARTTLS unless told otherwise)."""

    host: str
    port: int = 587
    sender: str = "twokey@localhost"
    starttls: bool = True
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = 10.0

    async def send_code(self, address: str, request: Request, code: str) -> None:
        await asyncio.to_thread(self._send, _message(self.sender, address, request, code))

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username and self.password is not None:
                smtp.login(self.username, self.password.get_secret_value())
            smtp.send_message(message)


def _message(sender: str, address: str, request: Request, code: str) -> EmailMessage:
    """Plain text; header values go through EmailMessage, which refuses line breaks in them."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = address
    message["Subject"] = f"Your twokey verification code for {request.id}"
    minutes = max(1, request.plan.code_ttl // 60)
    message.set_content(
        f"The help desk asked to {request.action.label} for your account "
        f"(ticket {request.ticket}, request {request.id}).\n\n"
        f"If you asked for this, type this in your chat with twokey:\n\n"
        f"    verify {request.id} {code}\n\n"
        f"The code works for {minutes} minutes. Never tell it to anyone, including the help "
        'desk.\n\nIf you did not ask for this, do not use the code: answer "This wasn\'t me" '
        "in chat, or call your security team.\n"
    )
    return message
