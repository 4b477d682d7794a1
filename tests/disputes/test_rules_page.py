"""The public rules page (issue 10, item 6): its numbers come from the settings the timers use, in both languages."""

from decimal import Decimal

import pytest

from shop.models import Product

db = pytest.mark.django_db


@db
def test_the_rules_page_reads_every_number_from_the_settings(client, settings):
    settings.DISPUTE_MERCHANT_HOURS = 48
    settings.DISPUTE_BUYER_HOURS = 48
    settings.DISPUTE_ARBITRATION_HOURS = 72
    settings.PLATFORM_FEE_PERCENT = Decimal("5")
    html = client.get("/rules/").content.decode()
    assert "The merchant has 48 hours" in html
    assert "you have 48 hours to answer" in html
    assert "within 72 hours" in html
    assert f"{Product._meta.get_field('inspection_hours').default} hours unless" in html
    assert "the platform fee of 5 %" in html
    # 100.00 split 30 %: refund 30.00; merchant's part 70.00, fee 5 % = 3.50, merchant gets 66.50.
    assert "refunds ¥30.00 CNY" in html
    assert "the fee is ¥3.50 CNY and the merchant receives ¥66.50 CNY" in html

    settings.DISPUTE_MERCHANT_HOURS = 12
    settings.DISPUTE_BUYER_HOURS = 36
    settings.DISPUTE_ARBITRATION_HOURS = 100
    settings.PLATFORM_FEE_PERCENT = Decimal("7.5")
    html = client.get("/rules/").content.decode()
    assert "The merchant has 12 hours" in html
    assert "you have 36 hours to answer" in html
    assert "within 100 hours" in html
    assert "the platform fee of 7.5 %" in html
    # Fee 7.5 % of 70.00 = 5.25; the merchant gets 64.75.
    assert "the fee is ¥5.25 CNY and the merchant receives ¥64.75 CNY" in html


@db
def test_the_rules_page_in_chinese(client, settings):
    settings.DISPUTE_MERCHANT_HOURS = 30
    html = client.get("/rules/", headers={"accept-language": "zh-hans"}).content.decode()
    assert '<html lang="zh-hans">' in html
    assert "买家保障与争议规则" in html
    assert "商家须在 30 小时内" in html


@db
def test_the_base_template_links_the_rules(client):
    assert 'href="/rules/"' in client.get("/").content.decode()
