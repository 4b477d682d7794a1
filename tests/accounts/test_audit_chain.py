"""The audit trail's hash chain: sealed by a periodic task, checked by `manage.py verify_audit`."""

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from accounts.models import AuditAction, AuditCheckpoint, AuditEntry
from accounts.services import audit_chain_seal, audit_checkpoint_publish, audit_record
from escrow import services as escrow_services
from escrow.models import OrderStatus
from tests.conftest import requires_postgres
from tests.factories import order_delivered, product_create, user_create


def verify() -> str:
    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


def verify_fails() -> str:
    with pytest.raises(CommandError) as failed:
        verify()
    return str(failed.value)


@pytest.fixture
def flows(db, run_on_commit):
    """Real flows write the trail: checkout, payment, delivery, the buyer's acceptance, a lapsed window."""
    product = product_create(stock=5)
    with run_on_commit():
        accepted = order_delivered(product=product)
        lapsed = order_delivered(product=product, email="other@example.com")
    escrow_services.order_confirm_receipt(order=accepted, now=timezone.now())
    escrow_services.orders_release_due(now=timezone.now() + timedelta(days=30))
    lapsed.refresh_from_db()
    assert lapsed.status == OrderStatus.COMPLETED
    return [accepted, lapsed]


def sealed_entries() -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(seq__isnull=False).order_by("seq"))


def test_verify_passes_after_real_flows(flows):
    entries = AuditEntry.objects.count()
    assert entries >= 8  # placed, paid, delivered (twice), completed, …
    assert audit_chain_seal() == entries
    checkpoint = audit_checkpoint_publish(now=timezone.now())
    assert checkpoint.seq == entries
    output = verify()
    assert f"{entries} sealed entries" in output
    assert "1 published checkpoints match" in output
    assert "not sealed" not in output
    # A second run seals nothing and publishes no second checkpoint of the same head.
    assert audit_chain_seal() == 0
    assert audit_checkpoint_publish(now=timezone.now()) is None
    chain = sealed_entries()
    assert [entry.seq for entry in chain] == list(range(1, entries + 1))
    assert chain[1].prev_hash == chain[0].hash


def test_unsealed_entries_are_reported_not_errors(flows):
    audit_chain_seal()
    product = product_create()
    audit_record(action=AuditAction.PRODUCT_PAUSED, subject=product, now=timezone.now())
    output = verify()
    assert "not sealed yet" in output
    assert "The audit chain holds" in output


def test_an_edited_entry_is_named(flows):
    audit_chain_seal()
    victim = sealed_entries()[3]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_auditentry SET subject_id = '999' WHERE id = %s", [victim.pk])
    message = verify_fails()
    assert f"entry {victim.pk} (seq {victim.seq}) was edited" in message


def test_an_edited_entry_with_a_recomputed_hash_breaks_the_next_link(flows):
    from accounts.audit_chain import row_hash

    audit_chain_seal()
    victim, after = sealed_entries()[3:5]
    victim.subject_id = "999"
    forged = row_hash(victim, seq=victim.seq, prev_hash=victim.prev_hash)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_auditentry SET subject_id = '999', hash = %s WHERE id = %s", [forged, victim.pk]
        )
    message = verify_fails()
    assert f"entry {after.pk} (seq {after.seq}) is out of order: it does not follow entry {victim.pk}" in message


def test_a_deleted_entry_is_named(flows):
    audit_chain_seal()
    before, victim, after = sealed_entries()[2:5]
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM accounts_auditentry WHERE id = %s", [victim.pk])
    message = verify_fails()
    assert f"entry at seq {victim.seq} is missing (deleted)" in message
    assert f"from entry {before.pk} (seq {before.seq}) to entry {after.pk}" in message


def test_swapped_entries_are_named(flows):
    audit_chain_seal()
    chain = sealed_entries()
    first, second = chain[2], chain[5]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE accounts_auditentry SET seq = -1 WHERE id = %s", [first.pk])
        cursor.execute("UPDATE accounts_auditentry SET seq = %s WHERE id = %s", [first.seq, second.pk])
        cursor.execute("UPDATE accounts_auditentry SET seq = %s WHERE id = %s", [second.seq, first.pk])
    message = verify_fails()
    assert f"entry {second.pk} (seq {first.seq}) is out of order" in message


def test_entries_whose_contents_were_swapped_are_named(flows):
    """Swapping what two rows say (ids and chain columns left in place) is an edit of the earlier one."""
    audit_chain_seal()
    chain = sealed_entries()
    first, second = chain[1], chain[6]
    assert (first.action, first.subject_id) != (second.action, second.subject_id)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_auditentry AS e SET action = o.action, subject_type = o.subject_type, "
            "subject_id = o.subject_id, data = o.data, at = o.at, actor_id = o.actor_id "
            "FROM accounts_auditentry AS o WHERE (e.id, o.id) IN ((%s, %s), (%s, %s))",
            [first.pk, second.pk, second.pk, first.pk],
        )
    message = verify_fails()
    assert f"entry {first.pk} (seq {first.seq}) was edited" in message


def test_a_rewritten_chain_no_longer_matches_its_published_checkpoint(flows):
    audit_chain_seal()
    checkpoint = audit_checkpoint_publish(now=timezone.now())
    # Whoever holds the database edits an entry and re-seals the whole trail: every hash fits again…
    victim = sealed_entries()[1]
    AuditEntry.objects.filter(pk=victim.pk).update(subject_id="999")
    AuditEntry.objects.update(seq=None, prev_hash="", hash="")
    audit_chain_seal()
    # …but no longer the head the transparency page published.
    message = verify_fails()
    assert f"checkpoint seq {checkpoint.seq}" in message
    assert "does not match the chain" in message


def test_checkpoints_are_on_the_transparency_page(flows):
    audit_chain_seal()
    checkpoint = audit_checkpoint_publish(now=timezone.now())
    page = Client().get("/transparency/").content.decode()
    assert checkpoint.hash in page
    assert AuditCheckpoint.objects.count() == 1


def test_the_switch_turns_sealing_off(flows, settings):
    settings.AUDIT_CHAIN_ENABLED = False
    assert audit_chain_seal() == 0
    assert not AuditEntry.objects.filter(seq__isnull=False).exists()


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_an_entry_that_commits_late_is_sealed_by_the_next_run_not_skipped():
    """Ids are given at insert, commits land in another order: the entry with the lower id commits
    after a younger one was sealed, and is chained next, after it."""
    user = user_create()
    inserted, release = threading.Event(), threading.Event()
    late_pk = []

    def slow_writer():
        try:
            with transaction.atomic():
                late_pk.append(audit_record(action=AuditAction.ALERT_RAISED, subject=user, now=timezone.now()).pk)
                inserted.set()
                release.wait(10)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert inserted.wait(10)
    early = audit_record(action=AuditAction.ALERT_RAISED, subject=user, now=timezone.now())
    assert early.pk > late_pk[0]
    assert audit_chain_seal() == 1  # only the committed one
    release.set()
    writer.join(10)
    assert audit_chain_seal() == 1
    late = AuditEntry.objects.get(pk=late_pk[0])
    early.refresh_from_db()
    assert late.seq == early.seq + 1
    assert late.prev_hash == early.hash
    assert "2 sealed entries" in verify()


def test_beat_seals_and_publishes_through_the_tasks(flows):
    from accounts.tasks import audit_chain_seal_task, audit_checkpoint_publish_task
    from config.celery import app

    schedule = app.conf.beat_schedule
    assert schedule["accounts.audit_chain_seal"]["task"] == audit_chain_seal_task.name
    assert schedule["accounts.audit_checkpoint_publish"]["task"] == audit_checkpoint_publish_task.name
    entries = AuditEntry.objects.count()
    assert audit_chain_seal_task.delay().get() == entries
    product = product_create()
    audit_record(action=AuditAction.PRODUCT_PAUSED, subject=product, now=timezone.now())
    # The hourly task seals what is pending first, so the checkpoint is the newest head.
    assert audit_checkpoint_publish_task.delay().get() == AuditEntry.objects.count()
    assert "1 published checkpoints match" in verify()


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_manage_py_verify_audit_exits_0_clean_and_1_naming_the_entry():
    """The command as monitoring runs it: its own process on the (committed) test database."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.processes import test_database_url

    user = user_create()
    for _ in range(3):
        audit_record(action=AuditAction.ALERT_RAISED, subject=user, now=timezone.now())
    audit_chain_seal()

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", "verify_audit"],
            cwd=Path(__file__).resolve().parents[2],
            env={**os.environ, "DATABASE_URL": test_database_url()},
            capture_output=True,
            text=True,
            timeout=120,
        )

    clean = run()
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout.count("\n") == 1 and "3 sealed entries" in clean.stdout
    victim = sealed_entries()[1]
    AuditEntry.objects.filter(pk=victim.pk).update(action=AuditAction.ORDER_REFUNDED)
    broken = run()
    assert broken.returncode == 1
    assert f"entry {victim.pk} (seq {victim.seq}) was edited" in broken.stderr
