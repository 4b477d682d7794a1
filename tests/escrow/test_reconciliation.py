"""Daily reconciliation: matching books raise nothing; each difference raises one staff alert."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import Alert
from escrow import ledger, reconciliation, refunds
from escrow.models import AccountKind, Payment, Transfer
from tests import factories

pytestmark = pytest.mark.django_db


def window():
    now = timezone.now()
    return now - timedelta(hours=1), now + timedelta(hours=1), now + timedelta(hours=2)


def test_matching_books_raise_nothing(run_on_commit):
    with run_on_commit():
        order = factories.order_delivered(product=factories.product_create(stock=2))
        refunds.order_refund(order_pk=order.pk, now=timezone.now())
    since, until, now = window()
    assert reconciliation.reconcile(since=since, until=until, now=now) == []
    assert Alert.objects.count() == 0


def test_a_payment_missing_from_the_ledger_raises_one_alert_and_mails_staff(run_on_commit):
    factories.user_create(is_staff=True)
    with run_on_commit():
        order = factories.order_delivered(product=factories.product_create(stock=2))
    # Simulate a ledger that lost the payment: the gateway's books still have it.
    payment = Payment.objects.get(order=order)
    booked = Transfer.objects.get(transfer_id=f"payment:{payment.pk}")
    clearing, escrow = ledger.platform_account(AccountKind.GATEWAY_CLEARING, "CNY"), booked.credit_account
    ledger.transfer(
        transfer_id="test:undo", debit=escrow, credit=clearing, amount=booked.amount, code="test", now=timezone.now()
    )
    Transfer.objects.filter(pk=booked.pk).update(code="lost")
    since, until, now = window()
    with run_on_commit():
        differences = reconciliation.reconcile(since=since, until=until, now=now)
    assert len(differences) == 2  # the missing payment and the clearing balance
    assert Alert.objects.count() == 2
    assert sum("alert" in m.subject for m in mail.outbox) == 2
    with run_on_commit():
        reconciliation.reconcile(since=since, until=until, now=now)
    assert Alert.objects.count() == 2  # a rerun raises nothing new
