"""The Celery app. Periodic jobs are listed here, each with the reason for its interval."""

import os

from celery import Celery
from celery.schedules import crontab
from celery.signals import task_failure, task_postrun, task_prerun, task_retry, worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _database_connections_tidy(sender=None, **kwargs) -> None:
    """Around each task in a worker, what Django does around each request: close a connection that
    failed (a backend terminated mid-task) or outlived CONN_MAX_AGE, and health-check the rest before
    their next use. An eager task runs inside its caller's transaction, whose connection is not ours."""
    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()


task_prerun.connect(_database_connections_tidy, weak=False)
task_postrun.connect(_database_connections_tidy, weak=False)


def _task_failure_count(sender=None, **kwargs) -> None:
    from core.metrics import metric_count

    metric_count("task_failures", {"task": getattr(sender, "name", str(sender))})


def _task_retry_count(sender=None, **kwargs) -> None:
    from core.metrics import metric_count

    metric_count("task_retries", {"task": getattr(sender, "name", str(sender))})


def _metrics_flush(**kwargs) -> None:
    from core.metrics import metrics_flush

    metrics_flush()


# Counted into the shared store for /metrics (config/ops.py): a task that keeps failing is never silent.
task_failure.connect(_task_failure_count, weak=False)
task_retry.connect(_task_retry_count, weak=False)
# A pool process ends without running atexit: what it counted in its last second goes out here.
worker_process_shutdown.connect(_metrics_flush, weak=False)

app.conf.beat_schedule = {
    # A paid order is delivered within a second by the task queued at payment; this sweep catches the
    # ones whose task was lost (broker down at the time, Redis restarted empty, a worker killed), so
    # a buyer waits at most about ten seconds more. When nothing is stuck it is one indexed query.
    # ESCROW_DELIVERY_SWEEP_SECONDS shortens it for the fault tests.
    "escrow.orders_deliver_stuck": {
        "task": "escrow.orders_deliver_stuck",
        "schedule": float(os.environ.get("ESCROW_DELIVERY_SWEEP_SECONDS", "10")),
    },
    # A stock upload commits a batch every second or two; one that has not moved for
    # SHOP_STOCK_UPLOAD_STALL_SECONDS (two minutes) lost its worker. Checking every minute resumes it
    # within three minutes of the crash, which a merchant watching the progress bar accepts, and an
    # idle run is one query. SHOP_STOCK_UPLOAD_SWEEP_SECONDS shortens it for the fault tests.
    "shop.stock_uploads_resume": {
        "task": "shop.stock_uploads_resume",
        "schedule": float(os.environ.get("SHOP_STOCK_UPLOAD_SWEEP_SECONDS", "60")),
    },
    # The buyer of an order still unpaid (or without its keys) ORDER_LINK_EMAIL_DELAY_SECONDS (60) after
    # checkout is e-mailed its link; every 30 s sends it within half a minute of that, in one batch,
    # and an idle run is one indexed UPDATE. (A buyer who pays in time gets the link with the keys.)
    "escrow.orders_link_email": {"task": "escrow.orders_link_email", "schedule": 30.0},
    # A reservation lapses 15 minutes after checkout; checking every 30 s returns stock to sale
    # at most half a minute late, and each run only touches the orders that are due.
    "escrow.orders_expire": {"task": "escrow.orders_expire", "schedule": 30.0},
    # Inspection windows are hours long; a minute late is invisible to merchants, and each run
    # releases everything due in a few bulk transactions.
    "escrow.orders_release": {"task": "escrow.orders_release", "schedule": 60.0},
    # Dispute deadlines are two or three days long; applying each silence rule within five minutes is
    # well inside what anyone notices, and an idle run is one indexed query.
    "disputes.disputes_sweep": {"task": "disputes.disputes_sweep", "schedule": 300.0},
    # The ledger's invariants are checked hourly and the result shown in /metrics
    # (cardshop_ledger_verify_ok): a break is seen within the hour, and the check replays the
    # transfers, which is too heavy to run every minute on a large ledger.
    "escrow.ledger_verify": {"task": "escrow.ledger_verify", "schedule": 3600.0},
    # Reserve holds last days; releasing them within the hour is plenty and costs one query when idle.
    "escrow.reserves_release": {"task": "escrow.reserves_release", "schedule": 3600.0},
    # Idempotency keys are replayed for 24 hours; a key past that is replaced when reused anyway, so an
    # hourly purge only keeps the table small.
    "core.idempotency_keys_purge": {"task": "core.idempotency_keys_purge", "schedule": 3600.0},
    # The audit trail's hash chain (accounts/README.md): an entry is provable only once sealed, so
    # seal every 10 s; an idle run is one indexed query, and writers never wait for it.
    "accounts.audit_chain_seal": {"task": "accounts.audit_chain_seal", "schedule": 10.0},
    # A checkpoint of the chain's head on /transparency/ each hour: often enough that a rewrite of the
    # trail shows against a published head within the hour, few enough rows to list.
    "accounts.audit_checkpoint_publish": {"task": "accounts.audit_checkpoint_publish", "schedule": 3600.0},
    # Webhooks to merchants: the first retry is due a minute after a failure, so every 30 s keeps it
    # within half a minute; the same sweep re-queues sends lost with the broker. Idle, one indexed query.
    "shop.webhook_deliveries_sweep": {"task": "shop.webhook_deliveries_sweep", "schedule": 30.0},
    # KYC documents of rejected merchants are kept 90 days (KYC_REJECTED_RETENTION_DAYS) and then deleted.
    # The promise is counted in days, so a daily run keeps it to within a day; an idle run is one indexed
    # query. 03:15 UTC, away from the reconciliation at 01:30.
    "shop.kyc_documents_purge": {"task": "shop.kyc_documents_purge", "schedule": crontab(hour=3, minute=15)},
    # Reconciliation compares whole (UTC) days with the gateway's books, so once a day, after midnight
    # plus a margin for late webhooks.
    "escrow.reconcile_gateways": {"task": "escrow.reconcile_gateways", "schedule": crontab(hour=1, minute=30)},
    # The risk engine's velocity hits in the database (without a Redis cache; Redis's sorted sets trim
    # themselves): hits older than the longest window (30 days) are never counted, as every count
    # filters by time, so pruning only bounds the table. Hourly keeps each DELETE to about an hour's
    # hits, short enough not to hold up the checkouts that insert new ones.
    "risk.velocity_prune": {"task": "risk.velocity_prune", "schedule": 3600.0},
}
