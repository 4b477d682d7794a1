"""Small helpers for the shop tests: start an upload through the real service and let it run."""

from django.utils import timezone

from shop import selectors, services
from shop.models import Product, StockUpload, StockUploadSource


def upload(product, data: bytes, *, delimiter: str = "newline", name: str = "keys.txt", run=None) -> StockUpload:
    """Start an upload of `data` (bytes as the file holds them) and process it at once."""
    started = services.stock_upload_start(
        merchant=product.merchant,
        product_pk=product.pk,
        chunks=[data],
        source=StockUploadSource.FILE,
        delimiter=delimiter,
        original_name=name,
        actor=product.merchant.user,
        now=timezone.now(),
    )
    services.stock_upload_process(upload_pk=started.pk, now=timezone.now())
    started.refresh_from_db()
    return started


def plaintext_keys(product) -> list[str]:
    """The product's unsold keys, opened with the merchant's data key as stored now."""
    fresh = Product.objects.select_related("merchant").get(pk=product.pk)
    return sorted(key for _pk, key, _at in selectors.product_unsold_keys_plaintext(product=fresh))


def rejections(upload: StockUpload) -> list[tuple[int, str]]:
    return list(upload.rejections.order_by("line", "reason").values_list("line", "reason"))
