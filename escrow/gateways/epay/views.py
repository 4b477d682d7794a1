"""The shop's epay notify endpoint: GET or POST, answered in the plain text the protocol expects."""

from django.http import Http404, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from core.sessionless import session_not_required
from escrow import services
from escrow.gateways import WebhookRejected, gateway_enabled


@session_not_required
@csrf_exempt  # authenticated by its signature, not by a browser session
@require_http_methods(["GET", "POST"])
def notify(request):
    if not gateway_enabled("epay"):
        raise Http404
    # Most providers call with GET; a POST carries the same parameters as a form (or, rarely, in the URL).
    body = request.body if request.method == "POST" and request.body else request.META.get("QUERY_STRING", "").encode()
    try:
        services.webhook_receive(gateway_name="epay", body=body, headers=request.headers, now=timezone.now())
    except WebhookRejected:
        return HttpResponse("fail", content_type="text/plain", status=400)
    return HttpResponse("success", content_type="text/plain")
