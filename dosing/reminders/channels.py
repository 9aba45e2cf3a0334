"""How a reminder leaves the system. E-mail today; an SMS channel is another class with a
`send` method and a line in CHANNELS."""

from __future__ import annotations

import smtplib
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import EmailMessage


class PermanentSendError(Exception):
    """Retrying will not help (the address was refused); the reminder is marked failed."""


@dataclass(frozen=True)
class OutgoingMessage:
    subject: str
    body: str
    recipients: list[str]
    message_id: str


class EmailChannel:
    def send(self, message: OutgoingMessage) -> None:
        email = EmailMessage(
            subject=message.subject,
            body=message.body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=message.recipients,
            # The same id on a resend lets mail clients show one message.
            headers={"Message-ID": message.message_id},
        )
        try:
            email.send(fail_silently=False)
        except smtplib.SMTPRecipientsRefused as error:
            raise PermanentSendError(f"recipients refused: {', '.join(error.recipients)}") from error
        except smtplib.SMTPResponseException as error:
            if 500 <= error.smtp_code < 600:
                raise PermanentSendError(f"mail server refused the message ({error.smtp_code})") from error
            raise


CHANNELS = {"email": EmailChannel()}


def channel_for(name: str):
    return CHANNELS[name]
