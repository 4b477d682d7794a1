import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from escrow import services
from escrow.models import LedgerAccount, Order, Transfer
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def settled_books(run_on_commit):
    for quantity in (1, 2):
        placed = factories.order_place(product=factories.product_create(stock=3, price=999), quantity=quantity)
        with run_on_commit():
            factories.pay(placed.order)
    services.order_confirm_receipt(order=Order.objects.order_by("pk").first(), now=timezone.now())


def test_passes_after_the_flows(settled_books, capsys):
    call_command("verify_ledger")
    assert "every invariant holds" in capsys.readouterr().out


def test_fails_when_a_cached_balance_is_edited_by_hand(settled_books, capsys):
    LedgerAccount.objects.filter(kind="merchant_available").update(credits_posted=123456)
    with pytest.raises(CommandError):
        call_command("verify_ledger")
    err = capsys.readouterr().err
    assert "cached credits_posted" in err and "debits" in err


def test_fails_when_a_transfer_amount_is_edited_by_hand(settled_books, capsys):
    Transfer.objects.filter(code="payment").update(amount=1)
    with pytest.raises(CommandError):
        call_command("verify_ledger")
    assert "replayed" in capsys.readouterr().err


def test_fails_when_a_completed_order_was_paid_out_twice(settled_books, capsys):
    order = Order.objects.get(status="completed")
    share = Transfer.objects.get(order=order, code="share", kind="post_pending")
    Transfer.objects.filter(pk=share.pk).update(amount=share.amount + 1)
    with pytest.raises(CommandError):
        call_command("verify_ledger")
    assert f"Order {order.pk}" in capsys.readouterr().err
