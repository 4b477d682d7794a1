"""What a caller tells the risk engine about one act, and what it gets back (no models here)."""

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from core.client_ip import client_ip
from core.device import device_id, network_of

# An address's network, remembered: parsing the address and its network costs more than the rest of the
# context, and the same buyers come back (a context built without `network` computes it per act).
_network_of = lru_cache(maxsize=4096)(network_of)

EVENTS = ("signup", "login", "checkout", "payment", "dispute", "withdrawal", "payout_account_change")


class Outcome:
    ALLOW = "allow"
    CHALLENGE = "challenge"
    REVIEW = "review"
    BLOCK = "block"
    FREEZE = "freeze"

    # Stripe Radar's order: the harshest first; freeze is a block that also stops the account.
    ORDER = (FREEZE, BLOCK, REVIEW, CHALLENGE, ALLOW)
    REFUSING = frozenset({BLOCK, FREEZE})


@dataclass(frozen=True)
class RiskContext:
    """One act as the caller knows it. Every field is optional: a signal whose input is missing is
    absent (None) and no rule on it matches.

    `actor_id` is the signed-in user's pk (None for a guest); `amount` is in minor units; `extra` holds
    facts only the caller knows (e.g. {"revealed": 1} for a dispute of a key the buyer saw,
    {"merchant_orders_30d": 40, …}, {"payout_account_age_hours": 2}). `count_as` names further counters
    this act adds to (e.g. "dispute_revealed"), so rules can count them in windows too."""

    actor_id: int | None = None
    actor_created_at: datetime | None = None
    email: str = ""
    ip: str = ""
    network: str = ""
    device: str = ""
    amount: int | None = None
    currency: str = ""
    quantity: int | None = None
    product_id: int | None = None
    merchant_id: int | None = None
    payout_account: str = ""
    security_changed_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    count_as: tuple[str, ...] = ()

    def replace(self, **changes) -> "RiskContext":
        """A copy with `changes`: `dataclasses.replace` without its walk through every field and
        `__init__` (each checkout makes two)."""
        if not changes.keys() <= _FIELDS:
            raise TypeError(f"RiskContext has no field {sorted(changes.keys() - _FIELDS)}")
        copy = object.__new__(RiskContext)
        copy.__dict__.update(self.__dict__, **changes)
        return copy

    @property
    def actor_key(self) -> str:
        """Whose history this act belongs to: the account, else the e-mail (a guest), else nobody."""
        if self.actor_id is not None:
            return f"user:{self.actor_id}"
        if self.email:
            key = f"email:{self.email.strip().lower()}"
            # Stored in 300 characters: an address longer than any mailbox (a refused checkout's) by its hash.
            return key if len(key) <= 300 else f"email:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
        return ""

    def identities(self) -> dict[str, str]:
        """The dimensions velocity is counted by, each with its value (absent ones left out)."""
        found = {
            "account": str(self.actor_id) if self.actor_id is not None else "",
            "email": self.email.strip().lower(),
            "ip": self.ip,
            "network": self.network or (_network_of(self.ip) if self.ip else ""),
            "device": self.device,
        }
        return {name: value for name, value in found.items() if value}


_FIELDS = frozenset(RiskContext.__dataclass_fields__)


def context_from_request(request, *, user=None, email: str = "", **fields) -> RiskContext:
    """A context with the request's address, network and device, and the signed-in user (or `user`)."""
    user = user if user is not None else getattr(request, "user", None)
    signed_in = user is not None and user.is_authenticated
    ip = client_ip(request)
    return RiskContext(
        actor_id=user.pk if signed_in else None,
        actor_created_at=getattr(user, "date_joined", None) if signed_in else None,
        email=email or (getattr(user, "email", "") if signed_in else ""),
        ip=ip,
        network=network_of(ip) if ip else "",
        device=device_id(request) or "",
        **fields,
    )
