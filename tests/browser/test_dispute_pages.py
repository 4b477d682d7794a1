"""A guest opens a dispute from the order page on a phone, with a screenshot, and follows it: under the
Content-Security-Policy, with the countdown script running and nothing refused."""

import io

import pytest
from PIL import Image

from disputes.models import Dispute
from tests.disputes.helpers import delivered

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_guest_opens_a_dispute_from_the_order_page(page, settings, tmp_path):
    settings.DISPUTE_FILES_ROOT = tmp_path
    order = delivered()
    violations = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    page.goto(f"/orders/{order.pk}/t/{order.access_token}/")
    page.click("[data-testid=dispute-link]")
    page.select_option("select[name=reason]", "key_used")
    page.fill("textarea[name=statement]", "Already redeemed when I tried it.")
    shot = io.BytesIO()
    Image.new("RGB", (30, 30), (1, 2, 3)).save(shot, format="PNG")
    page.set_input_files(
        "input[name=screenshots]", files=[{"name": "s.png", "mimeType": "image/png", "buffer": shot.getvalue()}]
    )
    page.click("form[data-testid=dispute-form] button[type=submit]")
    page.wait_for_selector("[data-testid=dispute-status]")
    countdown = page.text_content("[data-testid=countdown]")
    assert " h " in countdown and "min" in countdown
    assert page.locator("[data-testid=attachments] a").count() == 1
    dispute = Dispute.objects.get(order=order)
    assert dispute.reason == "key_used" and dispute.attachments.count() == 1
    assert violations == []
