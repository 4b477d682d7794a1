"""The shop's Stripe pages: the pay link (creates the Checkout Session, then off to Stripe) and the webhook."""

from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from core.sessionless import session_not_required
from escrow import services
from escrow.gateways import GATEWAYS, WebhookIgnored, WebhookRejected, gateway_enabled
from escrow.models import Payment, PaymentStatus


@require_GET
def pay(request, payment_id: str):
    if not gateway_enabled("stripe"):
        raise Http404
    payment = (
        Payment.objects.filter(gateway="stripe", payment_id=payment_id, status=PaymentStatus.PENDING)
        .select_related("order__product")
        .first()
    )
    if payment is None:
        raise Http404
    back = request.GET.get("return") or "/"
    if not url_has_allowed_host_and_scheme(back, allowed_hosts=None):
        back = "/"
    try:
        url = GATEWAYS["stripe"].checkout_session_url(payment=payment, return_url=back)
    except Exception:
        return HttpResponse(_("Stripe is not reachable right now. Please try again in a moment."), status=503)
    return redirect(url)


@session_not_required
@csrf_exempt  # authenticated by its signature, not by a browser session
@require_POST
def webhook(request):
    if not gateway_enabled("stripe"):
        raise Http404
    try:
        result = services.webhook_receive(
            gateway_name="stripe", body=request.body, headers=request.headers, now=timezone.now()
        )
    except WebhookIgnored:
        return JsonResponse({"result": "ignored"})  # verified, but nothing the shop acts on
    except WebhookRejected as error:
        return JsonResponse({"detail": str(error), "code": "webhook_rejected"}, status=400)
    return JsonResponse({"result": result})
