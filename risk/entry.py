"""Ready-made assessments for callers that have a request in hand."""

from datetime import datetime

from risk.context import context_from_request
from risk.models import Decision


def signup_assess(*, request, email: str, now: datetime, challenge_passed: bool = False) -> Decision:
    """Assess a sign-up before the account exists (call it before creating the user).

    Raises `RiskRefused` (403 `risk_blocked`, or `challenge_required` unless `challenge_passed`) for a
    refusing decision; returns the decision otherwise. After creating the user, link it with
    `risk.decision_subject_set(decision=…, subject=("user", user.pk))`. Counts sign-ups per IP, network,
    device and e-mail, and distinct e-mails per device."""
    from risk.engine import assess
    from risk.services import decision_enforce

    decision = assess(event="signup", context=context_from_request(request, user=None, email=email), now=now)
    return decision_enforce(decision=decision, challenge_passed=challenge_passed)
