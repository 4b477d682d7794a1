"""Reputation (issue 10, item 5): the buyer's rating of a completed order, and a merchant's figures
computed from the data on a crafted set of orders and disputes, with the clock moved."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from disputes import services
from disputes.models import Dispute, Rating
from disputes.reputation import RatingError, merchant_reputation, rating_create
from escrow import services as escrow_services
from escrow.models import OrderStatus
from shop.models import Merchant, MerchantStatus
from tests import factories
from tests.conftest import requires_postgres

db = pytest.mark.django_db
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


def completed(run_on_commit, *, product=None, buyer=None, now=None):
    """An order placed, paid, delivered and confirmed by its buyer, through the real services."""
    product = product or factories.product_create(stock=3)
    with run_on_commit():
        placed = factories.order_place(product=product, buyer=buyer)
        assert factories.pay(placed.order).status_code == 200
    order = escrow_services.order_confirm_receipt(order=placed.order, now=now or timezone.now())
    order.access_token = placed.access_token
    return order


def assert_refused(code, **kwargs):
    ratings = list(Rating.objects.values_list())
    with pytest.raises(RatingError) as refused:
        rating_create(now=timezone.now(), **kwargs)
    assert refused.value.code == code
    assert list(Rating.objects.values_list()) == ratings


# --- the rating rules ---------------------------------------------------------------------------------


@db
def test_the_buyer_of_a_completed_order_rates_once(run_on_commit):
    order = completed(run_on_commit)
    rating = rating_create(order=order, stars=4, comment="  Fast.  ", now=timezone.now())
    assert (rating.stars, rating.comment, rating.merchant_id) == (4, "Fast.", order.merchant_id)
    assert_refused("already_rated", order=order, stars=5, comment="")
    assert Rating.objects.get(order=order).stars == 4


@db
def test_only_a_completed_order_is_rated(run_on_commit):
    from tests.disputes.helpers import delivered

    order = delivered(run_on_commit)
    assert order.status == OrderStatus.DELIVERED
    assert_refused("not_completed", order=order, stars=5, comment="")


@db
@pytest.mark.parametrize("stars", [0, 6, -1, True, "5"])
def test_stars_are_one_to_five(run_on_commit, stars):
    assert_refused("invalid_stars", order=completed(run_on_commit), stars=stars, comment="")


@db
def test_the_comment_is_at_most_500_characters(run_on_commit):
    order = completed(run_on_commit)
    assert_refused("comment_too_long", order=order, stars=3, comment="x" * 501)
    assert rating_create(order=order, stars=3, comment="x" * 500, now=timezone.now()).comment == "x" * 500


@db
def test_the_database_refuses_stars_outside_one_to_five(run_on_commit):
    order = completed(run_on_commit)
    with pytest.raises(IntegrityError), transaction.atomic():
        Rating.objects.create(order=order, merchant_id=order.merchant_id, stars=6, created_at=timezone.now())
    assert not Rating.objects.exists()


@db
def test_the_guest_rates_by_the_order_token_and_the_comment_is_escaped(run_on_commit, client):
    order = completed(run_on_commit)
    url = reverse("reputation:rate_guest", kwargs={"pk": order.pk, "token": order.access_token})
    response = client.post(url, {"stars": "5", "comment": "<script>alert(1)</script> great"})
    assert response.status_code == 302
    page = client.get(reverse("reputation:merchant", kwargs={"pk": order.merchant_id}))
    assert "&lt;script&gt;alert(1)&lt;/script&gt; great" in page.content.decode()
    assert "<script>alert(1)" not in page.content.decode()
    # The order page links to the rating page for a completed order.
    order_page = client.get(reverse("escrow:order_guest", kwargs={"pk": order.pk, "token": order.access_token}))
    assert f'href="{url}"' in order_page.content.decode()
    # Twice: a clear refusal, nothing more saved.
    again = client.post(url, {"stars": "1", "comment": "changed my mind"})
    assert again.status_code == 409
    assert "already been rated" in again.content.decode()
    assert list(Rating.objects.values_list("stars", flat=True)) == [5]


@db
def test_the_signed_in_buyer_rates_and_nobody_else_can(run_on_commit, client):
    buyer = factories.user_create()
    order = completed(run_on_commit, buyer=buyer)
    url = reverse("reputation:rate", kwargs={"pk": order.pk})
    assert client.post(url, {"stars": "2"}).status_code == 404  # anonymous
    client.force_login(factories.user_create())
    assert client.post(url, {"stars": "2"}).status_code == 404  # another user
    wrong_token = reverse("reputation:rate_guest", kwargs={"pk": order.pk, "token": "not-the-token"})
    assert client.post(wrong_token, {"stars": "2"}).status_code == 404
    assert not Rating.objects.exists()
    client.force_login(buyer)
    assert client.post(url, {"stars": "9"}).status_code == 400  # not a choice
    assert client.post(url, {"stars": "2", "comment": "y" * 501}).status_code == 400
    assert not Rating.objects.exists()
    assert client.post(url, {"stars": "2"}).status_code == 302
    assert Rating.objects.get().stars == 2


# --- the figures, on a crafted data set ----------------------------------------------------------------

NOW = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)


def _delivered_at(product, when, *, buyer=None, run_on_commit):
    with time_machine.travel(when, tick=False), run_on_commit():
        placed = factories.order_place(product=product, buyer=buyer)
        assert factories.pay(placed.order).status_code == 200
    placed.order.refresh_from_db()
    assert placed.order.delivered_at == when
    return placed.order


def _opened(order, when, run_on_commit) -> Dispute:
    with run_on_commit():
        return services.dispute_open(order_pk=order.pk, reason="key_invalid", statement="Invalid.", now=when)


@pytest.fixture
def crafted(run_on_commit, settings):
    """One merchant's history, each step at a chosen time:

    o1 delivered 120 days ago, confirmed, rated 5;  o2 delivered exactly 90 days ago, confirmed, rated 2;
    o3 delivered and disputed 90 days and 1 second ago, refunded by the merchant 2 hours later (against);
    o4 disputed 10 days ago, contested after 4 hours, escalated, split 40 % to the buyer (against);
    o5 disputed 5 days ago, replaced after 10 hours, accepted by the buyer (released: not against);
    o6 disputed 1 day ago, the merchant has not answered;
    o8 disputed 20 days ago, contested after 6 hours, escalated, split 0 % to the buyer (not against).
    Another merchant's disputed order must not count."""
    settings.DISPUTE_MERCHANT_HOURS = 48
    start = NOW - 200 * DAY
    with time_machine.travel(start, tick=False):
        merchant = factories.merchant_create(name="Crafted")
        product = factories.product_create(merchant=merchant, stock=10)
    staff = factories.user_create(is_staff=True)
    o1 = _delivered_at(product, NOW - 120 * DAY, run_on_commit=run_on_commit)
    escrow_services.order_confirm_receipt(order=o1, now=NOW - 119 * DAY)
    o2 = _delivered_at(product, NOW - 90 * DAY, run_on_commit=run_on_commit)
    escrow_services.order_confirm_receipt(order=o2, now=NOW - 90 * DAY + HOUR)
    for order, stars in ((o1, 5), (o2, 2)):
        order.refresh_from_db()
        rating_create(order=order, stars=stars, comment="", now=order.completed_at)

    edge = NOW - 90 * DAY - timedelta(seconds=1)
    o3 = _delivered_at(product, edge, run_on_commit=run_on_commit)
    d3 = _opened(o3, edge, run_on_commit)
    with run_on_commit():
        services.dispute_refund(dispute_pk=d3.pk, now=edge + 2 * HOUR)

    o4 = _delivered_at(product, NOW - 10 * DAY, run_on_commit=run_on_commit)
    d4 = _opened(o4, NOW - 10 * DAY, run_on_commit)
    with run_on_commit():
        services.dispute_contest(dispute_pk=d4.pk, statement="It works.", now=NOW - 10 * DAY + 4 * HOUR)
        services.dispute_escalate(dispute_pk=d4.pk, now=NOW - 10 * DAY + 5 * HOUR)
        services.dispute_decide(
            dispute_pk=d4.pk, outcome="split", buyer_percent=40, reason="Half.", now=NOW - 9 * DAY, actor=staff
        )

    o5 = _delivered_at(product, NOW - 5 * DAY, run_on_commit=run_on_commit)
    d5 = _opened(o5, NOW - 5 * DAY, run_on_commit)
    with run_on_commit():
        services.dispute_replace(dispute_pk=d5.pk, now=NOW - 5 * DAY + 10 * HOUR)
        services.dispute_accept(dispute_pk=d5.pk, now=NOW - 5 * DAY + 11 * HOUR)

    o8 = _delivered_at(product, NOW - 20 * DAY, run_on_commit=run_on_commit)
    d8 = _opened(o8, NOW - 20 * DAY, run_on_commit)
    with run_on_commit():
        services.dispute_contest(dispute_pk=d8.pk, statement="It works.", now=NOW - 20 * DAY + 6 * HOUR)
        services.dispute_escalate(dispute_pk=d8.pk, now=NOW - 20 * DAY + 7 * HOUR)
        services.dispute_decide(
            dispute_pk=d8.pk, outcome="split", buyer_percent=0, reason="Works.", now=NOW - 19 * DAY, actor=staff
        )

    o6 = _delivered_at(product, NOW - DAY, run_on_commit=run_on_commit)
    _opened(o6, NOW - DAY, run_on_commit)

    other = factories.product_create(stock=2)
    o7 = _delivered_at(other, NOW - DAY, run_on_commit=run_on_commit)
    d7 = _opened(o7, NOW - DAY, run_on_commit)
    with run_on_commit():
        services.dispute_refund(dispute_pk=d7.pk, now=NOW - DAY + HOUR)
    return merchant


@requires_postgres
@db
def test_every_figure_is_computed_from_the_data(crafted, django_assert_max_num_queries):
    with django_assert_max_num_queries(4):
        figures = merchant_reputation(crafted.pk, NOW)
    assert (figures.rating_average, figures.rating_count) == (3.5, 2)
    # o1, o2 confirmed; o5 completed when the buyer accepted the replacement, o8 when staff gave the buyer
    # nothing; o4 ended partially refunded.
    assert figures.completed_orders == 4
    # Delivered in [NOW - 90 days, NOW]: o2 (exactly on the edge), o4, o5, o6, o8; o3 is one second too old.
    assert (figures.disputes_recent, figures.delivered_recent, figures.dispute_rate) == (4, 5, 0.8)
    # Resolved: o3 refunded and o4 split 40 % (against); o5 released and o8 split 0 % (not against).
    assert (figures.disputes_against, figures.disputes_resolved, figures.against_share) == (2, 4, 0.5)
    # First answers after 2, 4, 6 and 10 hours; o6 unanswered is not in it.
    assert figures.median_answer == 5 * HOUR
    assert figures.member_since == NOW - 200 * DAY


@requires_postgres
@db
def test_the_90_day_window_moves_with_the_clock(crafted):
    # One second later o2 (delivered exactly 90 days before NOW) leaves the window.
    later = merchant_reputation(crafted.pk, NOW + timedelta(seconds=1))
    assert (later.disputes_recent, later.delivered_recent, later.dispute_rate) == (4, 4, 1.0)
    # A day (and a second) earlier the window takes o3 in, on its edge, and leaves o6 out.
    earlier = merchant_reputation(crafted.pk, NOW - DAY - timedelta(seconds=1))
    assert (earlier.disputes_recent, earlier.delivered_recent) == (4, 5)  # o3 o4 o5 o8 / o2 o3 o4 o5 o8
    # One second before NOW, o3's dispute sits exactly on the window's start: in (with o4 o5 o6 o8).
    edge = merchant_reputation(crafted.pk, NOW - timedelta(seconds=1))
    assert (edge.disputes_recent, edge.delivered_recent) == (5, 6)
    # Nothing happened yet long ago: no figures, no division by zero.
    empty = merchant_reputation(crafted.pk, NOW - 150 * DAY)
    assert (empty.rating_count, empty.completed_orders, empty.dispute_rate, empty.against_share) == (0, 0, None, None)
    assert empty.median_answer is None


@requires_postgres
@db
def test_a_reopened_dispute_keeps_the_first_answer_time(run_on_commit, settings):
    from tests.disputes.helpers import opened

    now = timezone.now()
    dispute = opened(run_on_commit, now=now)
    with run_on_commit():
        services.dispute_replace(dispute_pk=dispute.pk, now=now + 3 * HOUR)
        services.dispute_reopen(dispute_pk=dispute.pk, statement="Still bad.", now=now + 4 * HOUR)
        services.dispute_replace(dispute_pk=dispute.pk, now=now + 20 * HOUR)
    assert Dispute.objects.get(pk=dispute.pk).merchant_answered_at == now + 3 * HOUR
    assert merchant_reputation(dispute.order.merchant_id, now + DAY).median_answer == 3 * HOUR


# --- the pages ------------------------------------------------------------------------------------------


@requires_postgres
@db
def test_the_merchant_page_and_the_product_page_show_the_figures(crafted, client):
    with time_machine.travel(NOW, tick=False):
        page = client.get(reverse("reputation:merchant", kwargs={"pk": crafted.pk})).content.decode()
        product = crafted.products.first()
        product_page = client.get(reverse("escrow:product", kwargs={"pk": product.pk})).content.decode()
    for html in (page, product_page):
        assert "3.5 / 5 from 2 ratings" in html
        assert '<dd data-testid="completed">4</dd>' in html
        assert "80% (4 disputes / 5 orders delivered)" in html
        assert "50% (2 of 4 resolved)" in html
        assert "5 hours" in html
        assert (NOW - 200 * DAY).strftime("%Y-%m-%d") in html
    assert product.title in page
    assert reverse("reputation:rules") in product_page


@db
@pytest.mark.parametrize("status", [MerchantStatus.PENDING, MerchantStatus.REJECTED])
def test_the_merchant_page_is_404_unless_approved(client, status):
    merchant = factories.merchant_create(name="Hidden")
    assert client.get(reverse("reputation:merchant", kwargs={"pk": merchant.pk})).status_code == 200
    Merchant.objects.filter(pk=merchant.pk).update(status=status)
    assert client.get(reverse("reputation:merchant", kwargs={"pk": merchant.pk})).status_code == 404
    assert client.get("/merchants/999999/").status_code == 404


@db
def test_disputes_answered_before_the_field_existed_get_it_from_the_audit_trail(run_on_commit):
    import importlib

    from django.apps import apps

    from tests.disputes.helpers import opened

    backfill = importlib.import_module("disputes.migrations.0003_backfill_merchant_answered_at").backfill
    now = timezone.now()
    replaced, refunded, silent = (opened(run_on_commit, now=now) for _ in range(3))
    with run_on_commit():
        services.dispute_replace(dispute_pk=replaced.pk, now=now + 3 * HOUR)
        services.dispute_reopen(dispute_pk=replaced.pk, statement="Still bad.", now=now + 4 * HOUR)
        services.dispute_contest(dispute_pk=replaced.pk, statement="No.", now=now + 9 * HOUR)
        services.dispute_refund(dispute_pk=refunded.pk, now=now + 5 * HOUR)
        services.disputes_sweep(now=silent.deadline)  # the merchant's silence: refunded, never answered
    Dispute.objects.update(merchant_answered_at=None)
    backfill(apps, None)
    answered = dict(Dispute.objects.values_list("pk", "merchant_answered_at"))
    assert answered == {replaced.pk: now + 3 * HOUR, refunded.pk: now + 5 * HOUR, silent.pk: None}


@db
def test_the_merchant_page_in_chinese(client):
    merchant = factories.merchant_create(name="<b>Shop</b>")
    html = client.get(f"/merchants/{merchant.pk}/", headers={"accept-language": "zh-hans"}).content.decode()
    assert "纠纷率\uff08最近 90 天\uff09" in html  # full-width brackets, as Chinese writes them
    assert "暂无评价" in html
    assert "&lt;b&gt;Shop&lt;/b&gt;" in html
