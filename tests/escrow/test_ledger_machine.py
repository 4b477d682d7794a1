"""Property test: any sequence of money actions keeps every ledger invariant (PostgreSQL)."""

import functools
from datetime import timedelta

import pytest
from django.test import TestCase
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from accounts import services as accounts_services
from core.transitions import StateError
from escrow import refunds, services, withdrawals
from escrow.ledger_checks import ledger_problems
from escrow.models import KeyDisposition, Order, OrderStatus, Transfer, Withdrawal, WithdrawalStatus
from shop.models import CardKey, CardKeyStatus
from tests import factories
from tests.conftest import requires_postgres


def committed():
    """Run on-commit work (delivery, gateway refund events) as a real commit would."""
    return TestCase.captureOnCommitCallbacks(execute=True)


class MoneyMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.now = timezone.now()
        self.product = factories.product_create(stock=40, price=1999)
        self.merchant = self.product.merchant
        self.staff = factories.user_create(is_staff=True)
        factories.totp_device_create(user=self.merchant.user)
        self.codes = accounts_services.backup_codes_issue_unchecked(user=self.merchant.user, count=100, now=self.now)
        self.payout = factories.payout_account_create(merchant=self.merchant)
        self.orders: list[int] = []
        self.webhooks: list[tuple[bytes, dict]] = []

    def _orders(self, *statuses):
        return list(
            Order.objects.filter(pk__in=self.orders, status__in=statuses).order_by("pk").values_list("pk", flat=True)
        )

    @rule(quantity=st.integers(1, 2))
    def checkout(self, quantity):
        try:
            placed = factories.order_place(product=self.product, quantity=quantity)
        except services.CheckoutError:
            return
        self.orders.append(placed.order.pk)

    @rule(data=st.data())
    def pay(self, data):
        unpaid = self._orders(OrderStatus.AWAITING_PAYMENT, OrderStatus.EXPIRED)
        if not unpaid:
            return
        order = Order.objects.get(pk=data.draw(st.sampled_from(unpaid)))
        body, headers = factories.signed_webhook(payment=order.payments.get())
        with committed():
            assert factories.webhook_post(factories.Client(), body, headers).status_code == 200
        self.webhooks.append((body, headers))

    @precondition(lambda self: self.webhooks)
    @rule(data=st.data())
    def replay_webhook(self, data):
        body, headers = data.draw(st.sampled_from(self.webhooks))
        with committed():
            response = factories.webhook_post(factories.Client(), body, headers)
        assert response.json() == {"result": "duplicate"}

    @rule(data=st.data())
    def confirm(self, data):
        delivered = self._orders(OrderStatus.DELIVERED)
        if delivered:
            order = Order.objects.get(pk=data.draw(st.sampled_from(delivered)))
            services.order_confirm_receipt(order=order, now=self.now)

    @rule(hours=st.sampled_from([1, 25, 24 * 15]))
    def advance_clock(self, hours):
        self.now += timedelta(hours=hours)
        services.orders_expire_due(now=self.now)
        services.orders_release_due(now=self.now, batch=3)
        services.reserves_release_due(now=self.now)

    @rule(data=st.data(), disposition=st.sampled_from(KeyDisposition.values), partial=st.booleans())
    def refund(self, data, disposition, partial):
        candidates = self._orders(OrderStatus.PAID, OrderStatus.DELIVERED)
        if not candidates:
            return
        order = Order.objects.get(pk=data.draw(st.sampled_from(candidates)))
        keys = list(CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).values_list("pk", flat=True))
        chosen = keys[:1] if partial and len(keys) > 1 else None
        with committed():
            refunds.order_refund(
                order_pk=order.pk,
                now=self.now,
                key_pks=chosen,
                disposition=disposition,
                merchant=self.merchant if partial else None,
            )

    @precondition(lambda self: self.codes)
    @rule(percent=st.integers(1, 120))
    def withdraw(self, percent):
        available = withdrawals.available_balance(merchant=self.merchant, currency="CNY")
        before = available
        try:
            withdrawals.withdrawal_request(
                merchant=self.merchant,
                user=self.merchant.user,
                payout_account_pk=self.payout.pk,
                amount=available * percent // 100,
                currency="CNY",
                code=self.codes.pop(),
                now=self.now,
            )
        except withdrawals.WithdrawalRefused as error:
            assert error.code in {"below_minimum", "insufficient_funds"}
            assert withdrawals.available_balance(merchant=self.merchant, currency="CNY") == before

    @rule(data=st.data(), approve=st.booleans())
    def decide(self, data, approve):
        # This machine's own withdrawals only: rows of earlier examples stay in the database, and a draw
        # that depends on them would differ when Hypothesis replays the example.
        waiting = list(
            Withdrawal.objects.filter(merchant=self.merchant, status=WithdrawalStatus.REQUESTED)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if not waiting:
            return
        pk = data.draw(st.sampled_from(waiting))
        if approve:
            service = functools.partial(withdrawals.withdrawal_approve, payout_reference=f"bank-ref-{pk}")
        else:
            service = withdrawals.withdrawal_reject
        service(withdrawal_pk=pk, staff=self.staff, now=self.now)
        with pytest.raises(StateError):
            service(withdrawal_pk=pk, staff=self.staff, now=self.now)

    # --- the front door for disputes (escrow/disputes_front.py) ---

    @precondition(lambda self: self._orders(OrderStatus.DELIVERED))
    @rule(data=st.data())
    def dispute_open(self, data):
        delivered = self._orders(OrderStatus.DELIVERED)
        order = Order.objects.get(pk=data.draw(st.sampled_from(delivered)))
        try:
            services.order_dispute_open(order_pk=order.pk, cause=f"dispute:{order.pk}:open", now=self.now)
        except services.DisputeRefused as refused:
            assert refused.code == "outside_window" and order.inspection_ends_at <= self.now
            return
        assert order.inspection_ends_at > self.now

    @rule()
    def buy_and_dispute(self):
        """A buyer who disputes as soon as the key arrives: keeps the decision rules busy in a short run."""
        try:
            order = factories.order_place(product=self.product).order
        except services.CheckoutError:
            return
        self.orders.append(order.pk)
        body, headers = factories.signed_webhook(payment=order.payments.get())
        with committed():
            assert factories.webhook_post(factories.Client(), body, headers).status_code == 200
        order.refresh_from_db()
        services.order_dispute_open(order_pk=order.pk, cause=f"dispute:{order.pk}:open", now=order.delivered_at)

    @precondition(lambda self: self._orders(OrderStatus.DISPUTED))
    @rule(data=st.data(), decision=st.sampled_from(["release", "refund", "refund_key", "refund_amount", "split"]))
    def dispute_decide(self, data, decision):
        disputed = self._orders(OrderStatus.DISPUTED)
        order = Order.objects.get(pk=data.draw(st.sampled_from(disputed)))
        service, terms = services.order_dispute_refund, {}
        if decision == "release":
            service = services.order_dispute_release
        elif decision == "split":
            service, terms = services.order_dispute_split, {"buyer_percent": data.draw(st.integers(0, 100))}
        elif decision == "refund_key":
            terms = {"key_pks": [CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).first().pk]}
        elif decision == "refund_amount":
            terms = {"amount": data.draw(st.integers(1, order.amount))}
        cause = f"dispute:{order.pk}:decision"
        with committed():
            action = service(order_pk=order.pk, cause=cause, now=self.now, **terms)
        assert action.refund_amount + action.share + action.fee == order.amount
        transfers = Transfer.objects.count()
        with committed():
            assert service(order_pk=order.pk, cause=cause, now=self.now, **terms).pk == action.pk
        assert Transfer.objects.count() == transfers

    @precondition(lambda self: self._orders(OrderStatus.DISPUTED))
    @rule(data=st.data())
    def dispute_replace_key(self, data):
        disputed = self._orders(OrderStatus.DISPUTED)
        order = Order.objects.get(pk=data.draw(st.sampled_from(disputed)))
        key = CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).order_by("pk").first()
        try:
            services.order_dispute_replace_key(
                order_pk=order.pk, key_pk=key.pk, cause=f"dispute:{order.pk}:replace:{key.pk}", now=self.now
            )
        except services.DisputeRefused as refused:
            assert refused.code == "out_of_stock"

    @invariant()
    def books_balance(self):
        assert ledger_problems() == []


@requires_postgres
@pytest.mark.django_db
def test_money_machine_keeps_the_ledger_invariants():
    run_state_machine_as_test(
        MoneyMachine,
        settings=settings(
            max_examples=12,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
