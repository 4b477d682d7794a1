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


def kyc_image(*, name: str = "licence.png", size: tuple[int, int] = (40, 30), image_format: str = "PNG"):
    """A small real image as an uploaded file (a photo of a licence, as far as the checks can tell)."""
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (200, 180, 40)).save(out, format=image_format)
    content_type = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[image_format]
    return SimpleUploadedFile(name, out.getvalue(), content_type=content_type)


def kyc_fields(**overrides) -> dict:
    """The KYC step of the sign-up form, with a fresh upload (an upload is read once)."""
    return {"kind": "business", "legal_name": "Lucky Trading Co., Ltd.", "document": kyc_image(), **overrides}
