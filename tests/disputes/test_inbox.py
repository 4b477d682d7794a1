"""The in-site inbox: the dispute services write a line for each signed-in party concerned, the header
shows the unread count (one COUNT query, none for visitors), opening a line marks it read."""

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Notification
from disputes import services
from tests import factories
from tests.disputes.helpers import opened

pytestmark = pytest.mark.django_db


def test_opening_tells_the_merchant_in_their_inbox_and_the_header_counts_it(run_on_commit):
    dispute = opened(run_on_commit)
    merchant_user = dispute.order.merchant.user
    # The sale itself told the merchant too (escrow.notifications); this test is about the dispute's line.
    Notification.objects.filter(event="order.paid").delete()
    (line,) = Notification.objects.filter(user=merchant_user)
    assert line.read_at is None and line.url == reverse("merchant_disputes:detail", kwargs={"pk": dispute.pk})
    client = Client()
    factories.login_verified(client, merchant_user)
    page = client.get(reverse("disputes:inbox"))
    assert page.status_code == 200
    assert '<span class="badge" data-testid="inbox-unread">1</span>' in page.content.decode()
    opened_line = client.get(reverse("disputes:inbox_open", kwargs={"pk": line.pk}))
    assert opened_line.status_code == 302 and opened_line.url == line.url
    line.refresh_from_db()
    assert line.read_at is not None
    assert 'data-testid="inbox-unread"' not in client.get(reverse("disputes:inbox")).content.decode()


def test_a_signed_in_buyer_hears_of_the_replacement_and_a_guest_has_no_inbox_line(run_on_commit):
    buyer = factories.user_create()
    signed_in = opened(run_on_commit, buyer=buyer)
    guest = opened(run_on_commit)
    for dispute in (signed_in, guest):
        services.dispute_replace(dispute_pk=dispute.pk, now=timezone.now())
    (line,) = Notification.objects.filter(user=buyer)  # buyers hear nothing of the payment in the inbox
    assert line.url == reverse("disputes:detail", kwargs={"pk": signed_in.pk})
    # The guest's dispute wrote lines for its merchant only (opened, nothing for the replacement).
    assert list(Notification.objects.filter(subject=f"dispute:{guest.pk}").values_list("user", flat=True)) == [
        guest.order.merchant.user_id
    ]


def test_someone_elses_notification_answers_404_and_stays_unread(run_on_commit):
    dispute = opened(run_on_commit)
    line = Notification.objects.get(subject=f"dispute:{dispute.pk}")
    client = Client()
    client.force_login(factories.user_create())
    assert client.get(reverse("disputes:inbox_open", kwargs={"pk": line.pk})).status_code == 404
    line.refresh_from_db()
    assert line.read_at is None


def test_the_unread_count_costs_one_query_and_none_for_visitors(rf):
    from django.contrib.auth.models import AnonymousUser

    from disputes.context_processors import inbox

    request = rf.get("/")
    request.user = AnonymousUser()
    with CaptureQueriesContext(connection) as queries:
        assert inbox(request) == {}
    assert len(queries) == 0
    request.user = factories.user_create()
    with CaptureQueriesContext(connection) as queries:
        assert inbox(request) == {"inbox_unread": 0}
    assert len(queries) == 1
