"""`config.wsgi` with the risk engine taken off the checkout: the "engine off" side of
`bench/checkout.py --compare risk`. Only the benchmark loads it; the shop has no switch for this."""

from config.wsgi import application  # noqa: F401  (sets Django up; gunicorn serves this)
from escrow import services


def _order_place_unassessed(*, risk_context, challenge_passed=False, **order):
    return services.order_place(**order)


services.order_place_assessed = _order_place_unassessed
