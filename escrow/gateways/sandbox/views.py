"""The sandbox gateway's own pages: its pay page (the "provider" side) and the shop's webhook endpoint."""

import time
from functools import wraps

from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core.money import to_major
from core.sessionless import session_not_required
from escrow import services
from escrow.gateways import SANDBOX, WebhookRejected, gateway_enabled
from escrow.gateways.sandbox.gateway import SIGNATURE_HEADER, event_body, signature_header
from escrow.models import Payment, PaymentStatus


def _sandbox_only(view):
    """Even where its URLs are mounted, the sandbox answers nothing unless it is enabled (never in production)."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not gateway_enabled(SANDBOX):
            raise Http404
        return view(request, *args, **kwargs)

    return wrapper


def _return_url(request) -> str:
    url = request.GET.get("return") or request.POST.get("return") or "/"
    return url if url_has_allowed_host_and_scheme(url, allowed_hosts=None) else "/"


@_sandbox_only
def pay(request, payment_id: str):
    """What a real provider's checkout page does: take the money (or fail), then tell the shop."""
    payment = Payment.objects.filter(gateway="sandbox", payment_id=payment_id).select_related("order__product").first()
    if payment is None:
        raise Http404
    if request.method == "POST" and payment.status == PaymentStatus.PENDING:
        outcome = "payment.succeeded" if request.POST.get("outcome") == "pay" else "payment.failed"
        body = event_body(
            event_type=outcome,
            payment_id=payment.payment_id,
            amount=to_major(payment.amount, payment.currency),
            currency=payment.currency,
        )
        # The provider signs and delivers its webhook; here it is handed to the same handler the
        # HTTP endpoint uses (signature check included), since calling our own server over a socket
        # would deadlock a single-worker deployment.
        services.webhook_receive(
            gateway_name="sandbox",
            body=body,
            now=timezone.now(),
            headers={SIGNATURE_HEADER: signature_header(body=body, timestamp=int(time.time()))},
        )
        return redirect(_return_url(request))
    return render(request, "sandbox/pay.html", {"payment": payment, "return_url": _return_url(request)})


@session_not_required
@csrf_exempt  # authenticated by its signature, not by a browser session
@_sandbox_only
@require_POST
def webhook(request):
    try:
        result = services.webhook_receive(
            gateway_name="sandbox", body=request.body, headers=request.headers, now=timezone.now()
        )
    except WebhookRejected as error:
        return JsonResponse({"detail": str(error), "code": "webhook_rejected"}, status=400)
    return JsonResponse({"result": result})
