"""The shop's Alipay notify endpoint: a form POST, answered in the plain text Alipay expects."""

from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core.sessionless import session_not_required
from escrow import services
from escrow.gateways import WebhookRejected, gateway_enabled


@session_not_required
@csrf_exempt  # authenticated by its signature, not by a browser session
@require_POST
def notify(request):
    if not gateway_enabled("alipay"):
        raise Http404
    try:
        services.webhook_receive(gateway_name="alipay", body=request.body, headers=request.headers, now=timezone.now())
    except WebhookRejected:
        return HttpResponse("fail", content_type="text/plain", status=400)
    return HttpResponse("success", content_type="text/plain")
