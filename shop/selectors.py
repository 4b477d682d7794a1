from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet

from core import prepared
from core.sql import instance_from_row, select_columns
from shop import crypto
from shop.models import (
    CardKey,
    CardKeyStatus,
    Category,
    Merchant,
    MerchantApiToken,
    MerchantStatus,
    Product,
    ProductStatus,
    StockUpload,
)
from shop.services import api_token_digest, merchant_data_key


def products_on_sale() -> QuerySet[Product]:
    """Products a buyer may see and buy, each annotated with `stock` (available keys): active ones of
    approved merchants; never a product awaiting staff review, rejected or paused."""
    return (
        Product.objects.filter(status=ProductStatus.ACTIVE, merchant__status=MerchantStatus.APPROVED)
        .select_related("merchant")
        .annotate(stock=Count("card_keys", filter=Q(card_keys__status=CardKeyStatus.AVAILABLE)))
        .order_by("pk")
    )


def product_on_sale_read(
    *, pk: int, also_select: str = "", also_params: Sequence[Any] = ()
) -> tuple[Product, tuple[Any, ...]] | None:
    """The product `pk` with its merchant if a buyer may buy it (as `products_on_sale`: active, of an
    approved merchant), else None; on PostgreSQL in ONE plain statement, for the checkout's hot path
    (compiling the queryset cost more CPU than PostgreSQL's work, issue 9).

    Without `products_on_sale`'s `stock`, which counts every available key of the product, and with
    the descriptions left to load on first use. `also_select`: SQL expressions of the caller's (with
    their parameters) evaluated in the same statement, once and only if the product is on sale, left
    to right; their values come back as the tuple (escrow's checkout takes its per-buyer locks and its
    order id here, saving a round trip each)."""
    if connection.vendor != "postgresql":
        assert not also_select, "also_select is PostgreSQL's"
        product = products_on_sale().filter(pk=pk).first()
        return (product, ()) if product is not None else None
    product_columns, product_names = select_columns(Product, "p", ("description", "description_html"))
    merchant_columns, merchant_names = select_columns(Merchant, "m")
    sql = (
        f"SELECT {also_select + ', ' if also_select else ''}{product_columns}, {merchant_columns} "  # noqa: S608
        f"FROM {Product._meta.db_table} p JOIN {Merchant._meta.db_table} m ON m.id = p.merchant_id "
        "WHERE p.id = %s AND p.status = %s AND m.status = %s"
    )
    with connection.cursor() as cursor:
        prepared.execute(cursor, sql, [*also_params, pk, ProductStatus.ACTIVE, MerchantStatus.APPROVED])
        row = cursor.fetchone()
    if row is None:
        return None
    extra = len(row) - len(product_names) - len(merchant_names)
    product = instance_from_row(Product, product_names, row[extra : extra + len(product_names)])
    product.merchant = instance_from_row(Merchant, merchant_names, row[extra + len(product_names) :])
    return product, tuple(row[:extra])


# The catalogue's sorts, by their value in the address (`?sort=`).
CATALOG_SORTS = {
    "newest": ("-created_at", "-pk"),
    "price_asc": ("price", "pk"),
    "price_desc": ("-price", "pk"),
    "bestselling": ("-sold", "-created_at", "-pk"),
}
CATALOG_SEARCH_MAX_LENGTH = 100


def _has_cjk(text: str) -> bool:
    return any("\u3040" <= char <= "\u9fff" or "\uac00" <= char <= "\ud7af" for char in text)


def _search(products: QuerySet[Product], q: str) -> tuple[QuerySet[Product], bool]:
    """Products whose title or description match `q`, and whether they carry a `rank` to sort by.

    PostgreSQL: full-text search ('simple' configuration, websearch syntax: words, "phrases", -not)
    over the expression the GIN index `shop_product_search_gin` holds (migration 0009). Its parser
    cannot split Chinese into words, so a query with Chinese (or Japanese, Korean) characters also
    matches titles containing it as written. Other databases: `icontains` on title and description.
    """
    if connection.vendor != "postgresql":
        return products.filter(Q(title__icontains=q) | Q(description__icontains=q)), False
    from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

    vector = SearchVector("title", "description", config="simple")
    query = SearchQuery(q, config="simple", search_type="websearch")
    matches = Q(search=query)
    if _has_cjk(q):
        matches |= Q(title__icontains=q) | Q(description__icontains=q)
    return products.annotate(search=vector, rank=SearchRank(vector, query)).filter(matches), True


def catalog_products(*, q: str = "", category: str = "", sort: str = "", in_stock: bool = False) -> QuerySet[Product]:
    """The catalogue as a buyer asked for it, each product with `stock` (available keys) and `sold`.

    `q` searches titles and descriptions (see `_search`); `category` is a category's slug (an unknown one
    matches nothing); `sort` one of CATALOG_SORTS, "" for the most relevant first when searching on
    PostgreSQL, else the oldest first (the API's order); `in_stock` keeps products with a key to sell.
    Merchant and category come in the same query: a page of cards costs one query, plus its count.
    """
    products = (
        Product.objects.filter(status=ProductStatus.ACTIVE, merchant__status=MerchantStatus.APPROVED)
        # the merchant's KYC row too: the verified badge says what was verified, with no query per card
        .select_related("merchant", "merchant__kyc", "category")
        .annotate(
            stock=Count("card_keys", filter=Q(card_keys__status=CardKeyStatus.AVAILABLE)),
            sold=Count("card_keys", filter=Q(card_keys__status=CardKeyStatus.SOLD)),
        )
    )
    q = " ".join(q.split())[:CATALOG_SEARCH_MAX_LENGTH]
    ranked = False
    if q:
        products, ranked = _search(products, q)
    if category:
        products = products.filter(category__slug=category)
    if in_stock:
        products = products.filter(stock__gt=0)
    if sort in CATALOG_SORTS:
        return products.order_by(*CATALOG_SORTS[sort])
    return products.order_by("-rank", "pk") if ranked else products.order_by("pk")


def categories() -> QuerySet[Category]:
    return Category.objects.order_by("position", "pk")


def order_keys_plaintext(*, order_pk: int) -> list[str]:
    """Open the sold keys of one order. Callers check that the viewer owns the order first."""
    keys = list(
        CardKey.objects.filter(order_id=order_pk, status=CardKeyStatus.SOLD).select_related("merchant").order_by("pk")
    )
    if not keys:
        return []
    return card_keys_open(
        merchant=keys[0].merchant, keys=[(key.product_id, key.fingerprint, key.sealed) for key in keys]
    )


def card_keys_open(*, merchant, keys: list[tuple[int, bytes, bytes]]) -> list[str]:
    """Open card keys of one merchant, each given as (product pk, fingerprint, sealed), in that order.

    `merchant` is a Merchant row or anything with its pk and data-key fields (`crypto.merchant_data_key`):
    a caller that read the keys with its own statement (escrow's key reveal) opens them here."""
    if not keys:
        return []
    data_key = merchant_data_key(merchant)
    return [
        crypto.card_key_open(
            data_key=data_key,
            sealed=bytes(sealed),
            aad=crypto.card_key_aad(product_pk=product_pk, fingerprint=bytes(fingerprint)),
        )
        for product_pk, fingerprint, sealed in keys
    ]


def merchant_products_with_stock(*, merchant: Merchant) -> QuerySet[Product]:
    """The merchant's products, each annotated with `available`, `reserved`, `sold` and `revoked`
    counts: one query (conditional aggregation over one join), however many products there are."""
    counts = {
        status.value: Count("card_keys", filter=Q(card_keys__status=status))
        for status in (CardKeyStatus.AVAILABLE, CardKeyStatus.RESERVED, CardKeyStatus.SOLD, CardKeyStatus.REVOKED)
    }
    return Product.objects.filter(merchant=merchant).select_related("category").annotate(**counts).order_by("pk")


def merchant_product(*, merchant: Merchant, pk: int) -> Product | None:
    return Product.objects.filter(merchant=merchant, pk=pk).first()


def merchant_upload(*, merchant: Merchant, pk: int) -> StockUpload | None:
    return StockUpload.objects.select_related("product").filter(merchant=merchant, pk=pk).first()


def merchant_uploads(*, merchant: Merchant) -> QuerySet[StockUpload]:
    return StockUpload.objects.filter(merchant=merchant).select_related("product").order_by("-pk")


def product_unsold_keys_plaintext(
    *, product: Product, exported_at: datetime | None = None
) -> Iterator[tuple[int, str, datetime]]:
    """Open the product's available keys, streaming (`(pk, key, created_at)`, in key order). Callers
    check ownership and the password, and record the export (`services.keys_export_record`); with
    `exported_at`, only the keys that export marked (a key added since is not in it)."""
    data_key = merchant_data_key(product.merchant)
    keys = CardKey.objects.filter(product=product, status=CardKeyStatus.AVAILABLE)
    if exported_at is not None:
        keys = keys.filter(exported_at=exported_at)
    rows = keys.order_by("pk").values_list("pk", "fingerprint", "sealed", "created_at")
    for pk, fingerprint, sealed, created_at in rows.iterator(chunk_size=2000):
        aad = crypto.card_key_aad(product_pk=product.pk, fingerprint=bytes(fingerprint))
        yield pk, crypto.card_key_open(data_key=data_key, sealed=sealed, aad=aad), created_at


def api_token_active(*, token: str) -> MerchantApiToken | None:
    """The active token whose digest matches, with its merchant and user, or None."""
    return (
        MerchantApiToken.objects.select_related("merchant__user")
        .filter(digest=api_token_digest(token), revoked_at__isnull=True)
        .first()
    )
