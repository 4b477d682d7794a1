"""`config.wsgi` with the risk engine taken off the checkout: the "engine off" side of
`bench/checkout.py --compare risk`. Only the benchmark loads it; the shop has no switch for this."""

from bench._harness import risk_engine_set
from config.wsgi import application  # noqa: F401  (sets Django up; gunicorn serves this)

risk_engine_set(on=False)
