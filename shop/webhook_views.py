"""The merchant area's webhook pages: endpoints (the secret shown once), the delivery log, resend."""

from django import forms
from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from shop import services, webhook_selectors
from shop.models import WebhookEventType
from shop.permissions import merchant_required
from shop.webhook_sending import URL_MAX_LENGTH


class WebhookEndpointForm(forms.Form):
    url = forms.CharField(
        label=gettext_lazy("URL"),
        max_length=URL_MAX_LENGTH,
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/shop-webhooks"}),
        help_text=gettext_lazy("We POST signed JSON here. It must be https and on the public internet."),
    )
    events = forms.MultipleChoiceField(
        label=gettext_lazy("Events"), choices=WebhookEventType.choices, widget=forms.CheckboxSelectMultiple
    )
    description = forms.CharField(label=gettext_lazy("Description"), max_length=100, required=False)


def _detail(request, endpoint, *, secret: str | None = None, status: int = 200):
    before = request.GET.get("before", "")
    before = int(before) if before.isdigit() and len(before) < 19 else None
    page = webhook_selectors.DELIVERY_PAGE
    deliveries = webhook_selectors.endpoint_deliveries(endpoint=endpoint, before=before, limit=page + 1)
    context = {
        "endpoint": endpoint,
        "deliveries": deliveries[:page],
        "next_before": deliveries[page - 1].pk if len(deliveries) > page else None,
        "secret": secret,
    }
    return render(request, "merchant/webhook_detail.html", context, status=status)


@never_cache
@merchant_required
def endpoints(request):
    form = WebhookEndpointForm(request.POST or None)
    created = secret = None
    if request.method == "POST" and form.is_valid():
        try:
            created, secret = services.webhook_endpoint_create(
                merchant=request.merchant,
                url=form.cleaned_data["url"],
                events=form.cleaned_data["events"],
                description=form.cleaned_data["description"],
                now=timezone.now(),
            )
        except services.WebhookEndpointRefused as error:
            form.add_error("events" if error.code == "webhook_events_invalid" else "url", str(error))
        else:
            form = WebhookEndpointForm()
    context = {
        "form": form,
        "endpoints": webhook_selectors.merchant_webhook_endpoints(merchant=request.merchant),
        "created": created,
        "secret": secret,
    }
    return render(request, "merchant/webhooks.html", context, status=400 if form.errors else 200)


@never_cache
@merchant_required
def endpoint_detail(request, pk: int):
    endpoint = webhook_selectors.merchant_webhook_endpoint(merchant=request.merchant, pk=pk)
    return _detail(request, endpoint)


@never_cache
@merchant_required
@require_POST
def endpoint_rotate_secret(request, pk: int):
    endpoint = webhook_selectors.merchant_webhook_endpoint(merchant=request.merchant, pk=pk)
    secret = services.webhook_endpoint_secret_rotate(endpoint=endpoint, now=timezone.now())
    return _detail(request, endpoint, secret=secret)


@merchant_required
@require_POST
def endpoint_enable(request, pk: int):
    endpoint = webhook_selectors.merchant_webhook_endpoint(merchant=request.merchant, pk=pk)
    try:
        services.webhook_endpoint_enable(endpoint=endpoint, now=timezone.now())
    except services.WebhookEndpointRefused as error:
        messages.error(request, str(error))
    else:
        messages.success(request, _("Endpoint enabled: new events are sent to it again."))
    return redirect("merchant_webhooks:detail", pk=endpoint.pk)


@merchant_required
@require_POST
def endpoint_delete(request, pk: int):
    endpoint = webhook_selectors.merchant_webhook_endpoint(merchant=request.merchant, pk=pk)
    services.webhook_endpoint_delete(endpoint=endpoint, now=timezone.now())
    messages.success(request, _("Endpoint deleted: nothing more is sent to it."))
    return redirect("merchant_webhooks:list")


@merchant_required
@require_POST
def delivery_resend(request, pk: int):
    delivery = webhook_selectors.merchant_webhook_delivery(merchant=request.merchant, pk=pk)
    try:
        services.webhook_delivery_resend(delivery=delivery, now=timezone.now())
    except services.WebhookEndpointRefused as error:
        messages.error(request, str(error))
    else:
        messages.success(request, _("Queued to be sent again."))
    return redirect("merchant_webhooks:detail", pk=delivery.endpoint_id)
