"""Issue 14, buyers 1: the catalogue's categories, search, sorts, "in stock only" and pages, as address
parameters, in the page and in GET /api/v1/products/ (whose fields stay as they were)."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from disputes.models import Rating
from escrow.models import Order
from shop import selectors
from shop.models import Category, Product
from tests import factories
from tests.conftest import requires_postgres

pytestmark = pytest.mark.django_db


@pytest.fixture
def shelf():
    """Four products of two merchants, made at different times, with different stock and sales."""
    games = Category.objects.create(slug="game-cards", name="Game cards", name_zh_hans="游戏点卡", position=1)
    gifts = Category.objects.create(slug="gift-cards", name="Gift cards", name_zh_hans="礼品卡", position=2)
    one, two = factories.merchant_create(name="Alpha Keys"), factories.merchant_create(name="Beta Cards")
    now = timezone.now()
    rows = {
        "steam": factories.product_create(
            merchant=one,
            title="Steam wallet 100",
            price=10000,
            stock=5,
            category=games,
            description="Redeem on the Steam client.",
        ),
        "psn": factories.product_create(
            merchant=one,
            title="PlayStation card",
            price=5000,
            stock=0,
            category=games,
            description="A wallet top-up for consoles.",
        ),
        "itunes": factories.product_create(
            merchant=two,
            title="App Store gift card",
            price=2500,
            stock=3,
            category=gifts,
            description="Works with the Steam of creativity: music, apps.",
        ),
        "tencent": factories.product_create(merchant=two, title="腾讯视频会员月卡", price=1900, stock=4),
    }
    for offset, key in enumerate(["steam", "psn", "itunes", "tencent"]):
        Product.objects.filter(pk=rows[key].pk).update(created_at=now - timedelta(days=10 - offset))
    return rows


def _titles(queryset) -> list[str]:
    return [product.title for product in queryset]


def test_search_matches_titles_and_descriptions(shelf):
    found = set(_titles(selectors.catalog_products(q="steam")))
    assert found == {"Steam wallet 100", "App Store gift card"}  # a title, and a description
    assert _titles(selectors.catalog_products(q="nothing-like-this")) == []


def test_search_finds_chinese_inside_a_title(shelf):
    assert _titles(selectors.catalog_products(q="会员")) == ["腾讯视频会员月卡"]


@requires_postgres
def test_postgres_search_is_full_text_over_the_indexed_expression(shelf):
    """Words, not substrings ("wall" is not "wallet"), and the query uses the GIN index's expression."""
    assert _titles(selectors.catalog_products(q="wall")) == []
    assert _titles(selectors.catalog_products(q="wallet -steam")) == ["PlayStation card"]  # -word excludes
    assert _titles(selectors.catalog_products(q="steam client")) == ["Steam wallet 100"]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # four rows: make the planner show it can use it
        plan = selectors.catalog_products(q="wallet").explain()
    assert "shop_product_search_gin" in plan


def test_the_fallback_search_on_other_databases_is_icontains(shelf, monkeypatch):
    """What SQLite runs (the demo's database), exercised here on whatever the suite runs on."""
    monkeypatch.setattr(connection, "vendor", "sqlite")
    assert set(_titles(selectors.catalog_products(q="STEAM"))) == {"Steam wallet 100", "App Store gift card"}
    assert set(_titles(selectors.catalog_products(q="wall"))) == {"Steam wallet 100", "PlayStation card"}


def test_category_sort_and_in_stock(shelf):
    assert _titles(selectors.catalog_products(category="game-cards", sort="price_asc")) == [
        "PlayStation card",
        "Steam wallet 100",
    ]
    assert _titles(selectors.catalog_products(category="game-cards", in_stock=True)) == ["Steam wallet 100"]
    assert _titles(selectors.catalog_products(category="no-such-category")) == []
    assert _titles(selectors.catalog_products(sort="price_desc"))[0] == "Steam wallet 100"
    assert _titles(selectors.catalog_products(sort="newest")) == [
        "腾讯视频会员月卡",
        "App Store gift card",
        "PlayStation card",
        "Steam wallet 100",
    ]


def test_best_selling_counts_sold_keys(shelf, run_on_commit):
    with run_on_commit():
        factories.order_delivered(product=shelf["itunes"], quantity=2)
        factories.order_delivered(product=shelf["tencent"], quantity=1)
    assert _titles(selectors.catalog_products(sort="bestselling"))[:2] == ["App Store gift card", "腾讯视频会员月卡"]


def test_the_page_takes_its_filters_from_the_address_and_ignores_bad_ones(shelf):
    page = Client().get("/", {"q": "steam", "category": "game-cards", "sort": "bogus", "in_stock": "on"})
    assert page.status_code == 200
    assert "Steam wallet 100" in page.text and "App Store gift card" not in page.text
    assert 'value="steam"' in page.text  # the search box keeps the query
    sold_out = Client().get("/", {"category": "game-cards"})
    assert "Sold out" in sold_out.text and "5 in stock · low" in sold_out.text
    nothing = Client().get("/", {"q": "zzzz"})
    assert "Nothing matches your search." in nothing.text


def test_pages_keep_the_other_parameters(shelf, settings):
    from shop import views

    original = views.CATALOG_PAGE_SIZE
    views.CATALOG_PAGE_SIZE = 2
    try:
        first = Client().get("/", {"sort": "price_asc"})
        second = Client().get("/", {"sort": "price_asc", "page": "2"})
        past_the_end = Client().get("/", {"sort": "price_asc", "page": "99"})
    finally:
        views.CATALOG_PAGE_SIZE = original
    assert "sort=price_asc&amp;page=2" in first.text
    assert "腾讯视频会员月卡" in first.text and "PlayStation card" not in first.text
    assert "PlayStation card" in second.text and "Steam wallet 100" in second.text
    assert "PlayStation card" in past_the_end.text  # the last page, not an error


def test_cards_show_the_merchants_rating_in_a_constant_number_of_queries(
    shelf, run_on_commit, django_assert_max_num_queries
):
    with run_on_commit():
        order = factories.order_delivered(product=shelf["steam"])
    Order.objects.filter(pk=order.pk).update(status="completed", completed_at=timezone.now())
    Rating.objects.create(order=order, merchant=order.merchant, stars=4, comment="", created_at=timezone.now())
    for index in range(6):  # more cards must not mean more queries
        factories.product_create(merchant=shelf["steam"].merchant, title=f"Extra {index}", stock=1)
    # session-less guest: the page count, the page, the categories, the ratings
    with django_assert_max_num_queries(4):
        page = Client().get("/")
    assert page.text.count('data-testid="merchant-rating"') == 1 + 1 + 6  # Alpha's cards (steam, psn, extras)
    assert "★ 4.0 (1)" in page.text


def test_category_names_follow_the_language(shelf):
    page = Client(headers={"accept-language": "zh-hans"}).get("/")
    assert "游戏点卡" in page.text


def test_the_api_keeps_its_fields_and_takes_the_same_filters(shelf):
    everything = Client().get("/api/v1/products/").json()
    assert set(everything["results"][0]) == {"id", "title", "price", "currency", "stock", "merchant"}
    assert [row["id"] for row in everything["results"]] == sorted(p.pk for p in shelf.values())  # by id, as before
    filtered = Client().get("/api/v1/products/", {"q": "steam", "in_stock": "true", "sort": "price_asc"}).json()
    assert [row["title"] for row in filtered["results"]] == ["App Store gift card", "Steam wallet 100"]
    by_category = Client().get("/api/v1/products/", {"category": "gift-cards"}).json()
    assert [row["title"] for row in by_category["results"]] == ["App Store gift card"]
