"""The merchant area's pages. Every lookup is scoped to `request.merchant`: another merchant's ids answer 404."""

import csv

from django.conf import settings
from django.contrib import messages
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from core.transitions import StateError
from shop import selectors, services
from shop.forms import (
    ApiTokenForm,
    CouponForm,
    KeyExportForm,
    MerchantAccountSignupForm,
    MerchantSettingsForm,
    MerchantSignupForm,
    ProductForm,
    RevokeForm,
    StockUploadForm,
)
from shop.models import Coupon, Merchant, MerchantApiToken, ProductStatus, RejectionReason, StockUploadSource
from shop.permissions import merchant_required
from shop.stock_files import StockFileError


class _Echo:
    """The file-like object csv.writer needs for streaming: write returns the line."""

    def write(self, value: str) -> str:
        return value


def _csv_response(rows, filename: str) -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    response = StreamingHttpResponse((writer.writerow(row) for row in rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response


def _product_or_404(request, pk: int):
    product = selectors.merchant_product(merchant=request.merchant, pk=pk)
    if product is None:
        raise Http404
    return product


# --- signing up ---------------------------------------------------------------------------------------


def signup(request):
    """Apply to sell. A visitor creates the account here too; a signed-in user only adds the shop."""
    if request.user.is_authenticated and Merchant.objects.filter(user=request.user).exists():
        return redirect("merchant:status")
    form_class = MerchantSignupForm if request.user.is_authenticated else MerchantAccountSignupForm
    form = form_class(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data, now = form.cleaned_data, timezone.now()
        if request.user.is_authenticated:
            services.merchant_signup(
                user=request.user, name=data["name"], contact=data["contact"], now=now, kyc=data["kyc"]
            )
        else:
            # The same answer whether or not the username or e-mail is taken (no enumeration): the
            # applicant signs in once the welcome e-mail arrives.
            services.merchant_signup_visitor(
                username=data["username"],
                email=data["email"],
                password=data["password"],
                name=data["name"],
                contact=data["contact"],
                now=now,
                kyc=data["kyc"],
            )
            return redirect("merchant:signup_sent")
        messages.success(request, _("Thank you. Staff review your application shortly."))
        return redirect("merchant:status")
    return render(request, "merchant/signup.html", {"form": form}, status=400 if form.errors else 200)


def signup_sent(request):
    return render(request, "merchant/signup_sent.html")


@merchant_required(approved=False)
def status(request):
    return render(
        request,
        "merchant/status.html",
        {"merchant": request.merchant, "kyc_retention_days": settings.KYC_REJECTED_RETENTION_DAYS},
    )


@merchant_required
def merchant_settings(request):
    """The merchant's own settings: contact line and whether each paid order is announced."""
    merchant = request.merchant
    form = MerchantSettingsForm(
        request.POST or None, initial={"contact": merchant.contact, "notify_paid_orders": merchant.notify_paid_orders}
    )
    if request.method == "POST" and form.is_valid():
        services.merchant_update(merchant=merchant, actor=request.user, now=timezone.now(), **form.cleaned_data)
        messages.success(request, _("Settings saved."))
        return redirect("merchant:settings")
    return render(request, "merchant/settings.html", {"form": form}, status=400 if form.errors else 200)


# --- products ------------------------------------------------------------------------------------------


@merchant_required
def products(request):
    products = selectors.merchant_products_with_stock(merchant=request.merchant)
    return render(request, "merchant/products.html", {"products": products})


@merchant_required
def product_create(request):
    form = ProductForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        product = services.product_create(
            merchant=request.merchant,
            title=data.pop("title"),
            price=data.pop("price"),
            currency=data.pop("currency"),
            now=timezone.now(),
            **data,
        )
        if product.status == ProductStatus.AWAITING_REVIEW:
            messages.success(
                request,
                _("Product created. Staff review it before it is listed; meanwhile, upload its stock."),
            )
        else:
            messages.success(request, _("Product created. Now upload its stock."))
        return redirect("merchant:product_stock", pk=product.pk)
    return render(request, "merchant/product_form.html", {"form": form})


@merchant_required
def product_edit(request, pk: int):
    product = _product_or_404(request, pk)
    form = ProductForm.for_product(product, data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        services.product_update(product=product, actor=request.user, now=timezone.now(), **form.cleaned_data)
        messages.success(request, _("Saved."))
        return redirect("merchant:products")
    return render(request, "merchant/product_form.html", {"form": form, "product": product})


@merchant_required
@require_POST
def product_pause(request, pk: int):
    return _product_status(request, pk, services.product_pause, _("Paused: buyers no longer see it."))


@merchant_required
@require_POST
def product_resume(request, pk: int):
    return _product_status(request, pk, services.product_resume, _("Back on sale."))


@merchant_required
@require_POST
def product_review_request(request, pk: int):
    return _product_status(
        request, pk, services.product_review_request, _("Sent to staff for review. It is listed once approved.")
    )


def _product_status(request, pk, service, message):
    product = _product_or_404(request, pk)
    try:
        service(product=product, actor=request.user, now=timezone.now())
        messages.success(request, message)
    except StateError:
        messages.error(request, _("Nothing changed: the product was already in that state."))
    return redirect("merchant:products")


# --- coupons ----------------------------------------------------------------------------------------------


@merchant_required
def coupons(request):
    """The merchant's coupons, and the form for a new one."""
    form = CouponForm(request.POST or None, merchant=request.merchant)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            coupon = services.coupon_create(
                merchant=request.merchant,
                code=data["code"],
                kind=data["kind"],
                value=data["value"],
                currency=data.get("currency") or "",
                product=data["product"],
                expires_at=data["expires_at"],
                max_uses=data["max_uses"],
                actor=request.user,
                now=timezone.now(),
            )
        except services.ShopError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, _("Coupon %(code)s created.") % {"code": coupon.code})
            return redirect("merchant:coupons")
    rows = Coupon.objects.filter(merchant=request.merchant).select_related("product").order_by("-pk")[:200]
    return render(request, "merchant/coupons.html", {"form": form, "coupons": rows, "now": timezone.now()})


@merchant_required
@require_POST
def coupon_deactivate(request, pk: int):
    coupon = Coupon.objects.filter(merchant=request.merchant, pk=pk).first()
    if coupon is None:
        raise Http404
    services.coupon_deactivate(coupon=coupon, actor=request.user, now=timezone.now())
    messages.success(request, _("Coupon %(code)s switched off.") % {"code": coupon.code})
    return redirect("merchant:coupons")


# --- stock: upload, revoke, export -----------------------------------------------------------------------


@merchant_required
def product_stock(request, pk: int):
    product = _product_or_404(request, pk)
    counts = selectors.merchant_products_with_stock(merchant=request.merchant).get(pk=product.pk)
    form = StockUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        if data["file"]:
            chunks, source, name = data["file"].chunks(), StockUploadSource.FILE, data["file"].name
        else:
            chunks, source, name = [data["text"].encode("utf-8")], StockUploadSource.PASTE, ""
        try:
            upload = services.stock_upload_start(
                merchant=request.merchant,
                product_pk=product.pk,
                chunks=chunks,
                source=source,
                delimiter=data["delimiter"],
                original_name=name,
                actor=request.user,
                now=timezone.now(),
            )
        except (StockFileError, services.ShopError) as error:
            form.add_error(None, str(error))
        else:
            return redirect("merchant:upload", pk=upload.pk)
    return render(
        request,
        "merchant/product_stock.html",
        {"product": counts, "form": form, "revoke_form": RevokeForm()},
    )


@merchant_required
@require_POST
def product_revoke(request, pk: int):
    product = _product_or_404(request, pk)
    form = RevokeForm(request.POST)
    if form.is_valid():
        keys = None if form.cleaned_data["revoke_all"] else form.cleaned_data["keys"].splitlines()
        try:
            count = services.keys_revoke(product=product, actor=request.user, now=timezone.now(), keys=keys)
            messages.success(request, _("%(count)d keys revoked.") % {"count": count})
        except services.ShopError as error:
            messages.error(request, str(error))
    else:
        messages.error(request, " ".join(form.non_field_errors()))
    return redirect("merchant:product_stock", pk=product.pk)


@never_cache  # the answer is every unsold key in plaintext: nothing may keep a copy
@merchant_required
def product_export(request, pk: int):
    """Unsold keys as CSV, only after the merchant types their password again and a fresh second-factor
    code; each export is audited."""
    product = _product_or_404(request, pk)
    form = KeyExportForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        now = timezone.now()
        services.keys_export_record(product=product, actor=request.user, now=now)
        rows = (
            (pk, key, created_at.isoformat())
            for pk, key, created_at in selectors.product_unsold_keys_plaintext(product=product, exported_at=now)
        )
        header = [("id", "key", "created_at")]
        return _csv_response(_chain(header, rows), f"product-{product.pk}-unsold-keys.csv")
    return render(request, "merchant/product_export.html", {"product": product, "form": form})


def _chain(*iterables):
    for iterable in iterables:
        yield from iterable


# --- uploads -----------------------------------------------------------------------------------------


@merchant_required
def uploads(request):
    return render(
        request, "merchant/uploads.html", {"uploads": selectors.merchant_uploads(merchant=request.merchant)[:100]}
    )


def _upload_or_404(request, pk: int):
    upload = selectors.merchant_upload(merchant=request.merchant, pk=pk)
    if upload is None:
        raise Http404
    return upload


def upload_state(upload) -> dict:
    return {
        "id": upload.pk,
        "status": upload.status,
        "total": upload.total,
        "processed": upload.processed,
        "imported": upload.imported,
        "duplicates": upload.duplicates,
        "rejected": upload.rejected,
        "percent": upload.percent,
        "error": upload.error,
    }


@merchant_required
def upload_detail(request, pk: int):
    upload = _upload_or_404(request, pk)
    return render(request, "merchant/upload.html", {"upload": upload})


@merchant_required
def upload_status(request, pk: int):
    response = JsonResponse(upload_state(_upload_or_404(request, pk)))
    response["Cache-Control"] = "no-store"
    return response


@merchant_required
def upload_report(request, pk: int):
    """The entries that were not imported: where they were (line, place on the line) and why, never their text."""
    upload = _upload_or_404(request, pk)
    labels = dict(RejectionReason.choices)
    # "entry" (the place on the line) was added last, so scripts reading the first columns still work.
    rejections = upload.rejections.order_by("line", "entry", "pk").values_list("line", "reason", "entry")
    rows = ((line, reason, labels.get(reason, reason), entry) for line, reason, entry in rejections.iterator(5000))
    return _csv_response(_chain([("line", "reason", "explanation", "entry")], rows), f"upload-{upload.pk}-rejected.csv")


# --- API tokens --------------------------------------------------------------------------------------------


@merchant_required
def tokens(request):
    form = ApiTokenForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            _record, created = services.merchant_api_token_create(
                merchant=request.merchant,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                actor=request.user,
                code=form.cleaned_data["code"],
                now=timezone.now(),
            )
        except services.ShopError as error:
            form.add_error("code", str(error))
        else:
            form = ApiTokenForm()
    tokens = MerchantApiToken.objects.filter(merchant=request.merchant).order_by("-pk")
    context = {"form": form, "tokens": tokens, "created": created}
    return render(request, "merchant/tokens.html", context, status=400 if form.errors else 200)


@merchant_required
@require_POST
def token_revoke(request, pk: int):
    token = MerchantApiToken.objects.filter(merchant=request.merchant, pk=pk).first()
    if token is None:
        raise Http404
    services.merchant_api_token_revoke(token=token, actor=request.user, now=timezone.now())
    messages.success(request, _("Token revoked: it no longer works."))
    return redirect("merchant:tokens")
