"""A merchant signs in, uploads a file of keys and watches the progress bar reach the end."""

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from shop import services
from shop.models import CardKey, StockUpload
from shop.tasks import stock_upload_process_task
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _send_file(page, product, tmp_path, lines: list[str]):
    path = tmp_path / "supplier-export.txt"
    path.write_bytes("\r\n".join(lines).encode("gb18030"))
    page.goto(f"/merchant/products/{product.pk}/stock/")
    page.set_input_files("input[name=file]", str(path))
    page.locator("[data-testid=upload-form] button[type=submit]").click()
    page.wait_for_url(re.compile(r"/merchant/uploads/\d+/$"))


def test_merchant_watches_a_running_upload_reach_the_end(page, sign_in, artifacts, tmp_path, monkeypatch):
    merchant = factories.merchant_create(name="Browser Keys")
    product = factories.product_create(merchant=merchant, stock=0, title="Game card 50")
    lines = [f"点卡-{i:05d} 密码{i:04d}" for i in range(1200)] + ["", "点卡-00001 密码0001"]
    # The worker has not picked the upload up yet: the page opens on a bar at 0 and must follow it.
    monkeypatch.setattr(stock_upload_process_task, "delay", lambda **kwargs: None)

    sign_in(page, merchant.user)
    _send_file(page, product, tmp_path, lines)
    status = page.locator("[data-field=status]")
    bar = page.locator("[data-field=bar]")
    expect(status).to_have_attribute("data-status", "running")
    assert bar.evaluate("bar => bar.value") == 0
    assert bar.evaluate("bar => bar.max") == 1202

    upload = StockUpload.objects.get()
    services.stock_upload_process(upload_pk=upload.pk, now=timezone.now())  # the worker's turn

    expect(status).to_have_attribute("data-status", "done", timeout=15_000)
    expect(status).to_have_text("Done")
    assert bar.evaluate("bar => [bar.value, bar.max]") == [1202, 1202]
    expect(page.locator("[data-field=imported]")).to_have_text("1200")
    expect(page.locator("[data-field=duplicates]")).to_have_text("1")
    expect(page.locator("[data-field=rejected]")).to_have_text("1")
    expect(page.get_by_test_id("report-link")).to_be_visible()
    page.screenshot(path=str(artifacts / "merchant-upload-done.png"), full_page=True)
    assert CardKey.objects.filter(product=product).count() == 1200


def test_an_upload_that_finished_at_once_shows_a_full_bar(page, sign_in, tmp_path):
    merchant = factories.merchant_create(name="Quick Keys")
    product = factories.product_create(merchant=merchant, stock=0)

    sign_in(page, merchant.user)
    _send_file(page, product, tmp_path, ["KEY-A", "KEY-B", "KEY-C"])  # eager Celery: done before the redirect

    expect(page.locator("[data-field=status]")).to_have_attribute("data-status", "done")
    assert page.locator("[data-field=bar]").evaluate("bar => [bar.value, bar.max]") == [3, 3]
    expect(page.locator("[data-field=imported]")).to_have_text("3")
