"""The Celery app. Periodic jobs are listed here, each with the reason for its interval."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # A reservation lapses 15 minutes after checkout; checking every 30 s returns stock to sale
    # at most half a minute late, and each run only touches the orders that are due.
    "escrow.orders_expire": {"task": "escrow.orders_expire", "schedule": 30.0},
}
