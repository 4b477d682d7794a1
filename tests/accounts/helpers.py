"""What the account tests share: reading links out of the e-mails the shop sent."""

import re

from django.core import mail

from core.mail import EVENT_HEADER

PASSWORD = "Correct-Horse-77"


def mails(event: str) -> list:
    return [message for message in mail.outbox if message.extra_headers.get(EVENT_HEADER) == event]


def link_in(message, fragment: str) -> str:
    """The path of the first link in `message` whose URL contains `fragment`."""
    for url in re.findall(r"https?://\S+", message.body):
        if fragment in url:
            return re.sub(r"^https?://[^/]+", "", url)
    raise AssertionError(f"no link with {fragment!r} in: {message.body}")
