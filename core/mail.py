"""The one way the shop sends e-mail: a one-line subject, and the event it is about in `X-Shop-Event`."""

import logging
from typing import NoReturn

from django.core.mail import EmailMessage, EmailMultiAlternatives

logger = logging.getLogger(__name__)

EVENT_HEADER = "X-Shop-Event"
# What a retry can get past: SMTP refusals (smtplib.SMTPException is an OSError), refused connections,
# timeouts. Anything else (a bad address, a bug) fails the same way every time.
MAIL_ERRORS = (OSError,)
RETRY_FIRST_SECONDS = 30
RETRY_MAX_SECONDS = 3600


def subject_line(text: str) -> str:
    """Any text as one header line: line breaks and other control characters become single spaces.

    A line break in a header either smuggles in another header or makes Django refuse the whole
    message (BadHeaderError), and a product title or a merchant's name can hold one.
    """
    return " ".join("".join(char if char.isprintable() else " " for char in text).split())


def mail_send(*, event: str, subject: str, body: str, to: list[str], html: str | None = None) -> None:
    """Send one e-mail now; raises what the backend raises (see `MAIL_ERRORS` for what may pass).
    With `html`, the message is multipart: `body` as its plain text, `html` as the alternative."""
    headers = {EVENT_HEADER: event}
    if html is None:
        EmailMessage(subject=subject_line(subject), body=body, to=to, headers=headers).send()
        return
    message = EmailMultiAlternatives(subject=subject_line(subject), body=body, to=to, headers=headers)
    message.attach_alternative(html, "text/html")
    message.send()


def mail_retry(task, error: Exception, *, log: str, **fields: object) -> NoReturn:
    """In a bound Celery task whose send failed: log it, and retry after 30 s, 1 min, 2 min, … (at most an
    hour apart); once the task's retries are spent, the error is raised and logged as given up."""
    retries = task.request.retries
    gave_up = retries >= task.max_retries
    countdown = None if gave_up else min(RETRY_FIRST_SECONDS * 2**retries, RETRY_MAX_SECONDS)
    logger.log(
        logging.ERROR if gave_up else logging.WARNING,
        log,
        extra={**fields, "attempt": retries + 1, "retry_in": countdown, "error": repr(error)},
    )
    raise task.retry(exc=error, countdown=countdown)
