"""Where other apps plug into accounts without accounts importing them (accounts imports only core).

Each app registers its functions in its `AppConfig.ready()`; accounts calls them at the named moment,
inside its own transaction, so their writes commit or roll back with it. A hook that raises fails the
whole step (nothing half-done).

- `EMAIL_VERIFIED` (`user=, now=`): when an account's e-mail is verified. Escrow attaches the guest
  orders placed with that e-mail.
- `CREDENTIALS_REVOKED` (`user=, now=` → how many revoked): when every credential of an account ends
  (password changed, "this wasn't me"). Shop revokes the merchant's API tokens.
- `ROLES` (`user` → set of role names): shop says "merchant".
- `ACTIVITY_SECTIONS` (name → `user` → rows): "Download my activity". Escrow gives orders, key reveals
  and withdrawals, disputes the disputes; each scopes its query to `user`.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

EMAIL_VERIFIED: list[Callable[..., Any]] = []
CREDENTIALS_REVOKED: list[Callable[..., Any]] = []
ROLES: list[Callable[[Any], set[str]]] = []


@dataclass(frozen=True)
class ActivityRow:
    """One line of the activity file: when, what kind, which object, what happened, and from where."""

    at: datetime | None
    section: str
    reference: str
    what: str
    details: str = ""
    ip: str = ""
    device: str = ""


# name -> function(user) returning the user's own rows; the function must scope its query to `user`.
ACTIVITY_SECTIONS: dict[str, Callable[[Any], Iterable[ActivityRow]]] = {}


def _add(registry: list, function: Callable) -> Callable:
    if function not in registry:  # ready() may run twice in tests; register once
        registry.append(function)
    return function


def on_email_verified(function: Callable) -> Callable:
    return _add(EMAIL_VERIFIED, function)


def on_credentials_revoked(function: Callable) -> Callable:
    return _add(CREDENTIALS_REVOKED, function)


def role_provider(function: Callable) -> Callable:
    return _add(ROLES, function)


def activity_section(name: str, function: Callable[[Any], Iterable[ActivityRow]]) -> None:
    ACTIVITY_SECTIONS[name] = function


def roles_of(user) -> set[str]:
    """The user's roles: "staff", plus whatever the registered providers add ("merchant"); "buyer" when
    there is nothing else."""
    roles = {"staff"} if user.is_staff else set()
    for provider in ROLES:
        roles |= provider(user)
    return roles or {"buyer"}
