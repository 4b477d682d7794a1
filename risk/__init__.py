"""The risk engine, asked by every app and importing none of them (only `core`).

    import risk
    decision = risk.assess(event="checkout", context=risk.RiskContext(...), now=now)
    risk.decision_enforce(decision=decision, challenge_passed=False)   # RiskRefused: 403 for the API

See risk/README.md. The names below are loaded on first use, so importing `risk` never loads models
before the app registry is ready.
"""

from risk.context import EVENTS, Outcome, RiskContext, context_from_request

__all__ = [
    "EVENTS",
    "Outcome",
    "RiskContext",
    "RiskRefused",
    "assess",
    "assessment_prepare",
    "assessment_start",
    "context_from_request",
    "decision_enforce",
    "decision_subject_set",
    "merchant_dispute_check",
    "merchant_reserve_percent",
    "merchant_reserve_percents",
    "outcome_count",
    "outcome_note",
    "review_handler_register",
    "review_open",
    "review_settled_elsewhere",
    "signup_assess",
    "subject_context",
    "subject_context_from",
    "subject_context_sql",
]

_LAZY = {
    "assess": "risk.engine",
    "assessment_prepare": "risk.engine",
    "assessment_start": "risk.engine",
    "signup_assess": "risk.entry",
    "decision_enforce": "risk.services",
    "decision_subject_set": "risk.services",
    "subject_context": "risk.services",
    "subject_context_from": "risk.services",
    "subject_context_sql": "risk.services",
    "outcome_count": "risk.services",
    "outcome_note": "risk.services",
    "review_open": "risk.services",
    "review_settled_elsewhere": "risk.services",
    "review_handler_register": "risk.services",
    "RiskRefused": "risk.services",
    "merchant_dispute_check": "risk.services",
    "merchant_reserve_percent": "risk.services",
    "merchant_reserve_percents": "risk.services",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'risk' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value  # found once: later uses (every checkout's) read the module's attribute
    return value
