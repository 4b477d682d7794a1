"""The buyer's dispute pages (signed in, or a guest by the order's token link), the screenshots, and the
inbox. Thin: every write is a `disputes.services` call; every read is scoped by the selectors (404)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from accounts.models import Notification
from accounts.services import notification_read
from disputes import services
from disputes.attachments import attachment_path, dispute_attachments_add
from disputes.forms import DisputeOpenForm, MessageForm, StatementForm
from disputes.models import Attachment, Dispute, DisputeStatus, MessageRole
from disputes.selectors import dispute_for_viewer
from disputes.templatetags.disputes import dispute_window_open
from escrow.selectors import order_for_viewer
from shop.models import CardKey, CardKeyStatus


def _buyer_urls(dispute: Dispute, token: str | None) -> dict[str, str]:
    if token:
        base = reverse("disputes:order_dispute_guest", kwargs={"pk": dispute.order_id, "token": token})
    else:
        base = reverse("disputes:detail", kwargs={"pk": dispute.pk})
    return {"page": base, **{action: f"{base}{action}/" for action in ("message", "accept", "reopen", "escalate")}}


def _buyer_dispute(request, *, pk: int | None = None, order_pk: int | None = None, token: str | None = None):
    """The dispute, if this viewer is its buyer: a signed-in buyer by the dispute's id, a guest by the
    order's token link. Anyone else (the merchant and staff included: they have their own pages) gets 404."""
    if token:
        order = order_for_viewer(pk=order_pk, token=token, user=None)
        dispute = Dispute.objects.select_related("order__merchant").filter(order=order).first()
        if dispute is None:
            raise Http404
        return dispute
    dispute, role = dispute_for_viewer(pk=pk, user=request.user, order_token=None)
    if role != MessageRole.BUYER:
        raise Http404
    return dispute


def _attachment_url(item: Attachment, token: str | None) -> str:
    if token:
        kwargs = {"order_pk": item.dispute.order_id, "token": token, "attachment_pk": item.pk}
        return reverse("disputes:attachment_guest", kwargs=kwargs)
    return reverse("disputes:attachment", kwargs={"pk": item.dispute_id, "attachment_pk": item.pk})


def _page_context(dispute: Dispute, *, token: str | None = None, **extra) -> dict:
    files = dispute.attachments.select_related("dispute").order_by("pk")
    return {
        "dispute": dispute,
        "order": dispute.order,
        "thread": dispute.messages.order_by("pk"),
        "attachments": [(item, _attachment_url(item, token)) for item in files],
        "is_open": dispute.status != DisputeStatus.RESOLVED,
        **extra,
    }


def _with_screenshots(step, *, dispute_pk_of, role: str, uploads: list, now):
    """Run one service step and attach its screenshots in the same transaction: a refused screenshot
    undoes the step, and a refused step stores no screenshot."""
    with transaction.atomic():
        result = step()
        dispute_attachments_add(dispute_pk=dispute_pk_of(result), role=role, uploads=uploads, now=now)
    return result


def party_step_run(request, *, dispute, steps: dict, action: str, role: str, now, back: str):
    """Run a party's answer from a page: check its form (if the step takes one), then the step and its
    screenshots in one transaction; each refusal becomes a message on the page at `back`."""
    if action not in steps:
        raise Http404
    form_class = {"contest": StatementForm, "reopen": StatementForm, "message": MessageForm}.get(action)
    data = {}
    if form_class is not None:
        form = form_class(request.POST, request.FILES)
        if not form.is_valid():
            for errors in form.errors.values():
                for error in errors:
                    messages.error(request, error)
            return redirect(back)
        data = form.cleaned_data
    try:
        _with_screenshots(
            lambda: steps[action](data),
            dispute_pk_of=lambda _result: dispute.pk,
            role=role,
            uploads=data.get("screenshots", []),
            now=now,
        )
    except services.DisputeError as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, _("Done."))
    return redirect(back)


# --- opening, from the order page ------------------------------------------------------------------------


@never_cache
def order_dispute(request, pk: int, token: str | None = None):
    """GET: the dispute form (or the dispute itself once there is one). POST: open it."""
    order = order_for_viewer(pk=pk, token=token, user=request.user)
    existing = Dispute.objects.filter(order=order).first()
    if existing is not None:
        if token:
            return buyer_page(request, dispute=existing, token=token)
        return redirect("disputes:detail", pk=existing.pk)
    key_pks = list(
        CardKey.objects.filter(order=order, status=CardKeyStatus.SOLD).order_by("pk").values_list("pk", flat=True)
    )
    form = DisputeOpenForm(request.POST or None, request.FILES or None, key_pks=key_pks)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            data, now = form.cleaned_data, timezone.now()
            try:
                _with_screenshots(
                    lambda: services.dispute_open(
                        order_pk=order.pk,
                        reason=data["reason"],
                        statement=data["statement"],
                        key_pks=data.get("keys") or None,
                        now=now,
                        actor=request.user,
                    ),
                    dispute_pk_of=lambda dispute: dispute.pk,
                    role=MessageRole.BUYER,
                    uploads=data["screenshots"],
                    now=now,
                )
            except services.DisputeError as refused:
                form.add_error(None, str(refused))
            else:
                messages.success(request, _("Your dispute is open. The merchant has been told."))
                return redirect(request.path)
        status = 400
    back = (
        reverse("escrow:order_guest", kwargs={"pk": order.pk, "token": token})
        if token
        else reverse("escrow:order", kwargs={"pk": order.pk})
    )
    # The form is offered only while the window is open; a post racing its end is refused by the service.
    is_open = request.method == "POST" or dispute_window_open(order)
    context = {"order": order, "form": form if is_open else None, "back": back}
    return render(request, "disputes/open.html", context, status=status)


# --- the buyer's dispute page ------------------------------------------------------------------------------


@never_cache
def buyer_page(request, pk: int | None = None, *, dispute: Dispute | None = None, token: str | None = None):
    if dispute is None:
        dispute = _buyer_dispute(request, pk=pk)
    return render(
        request,
        "disputes/buyer.html",
        _page_context(
            dispute,
            token=token,
            urls=_buyer_urls(dispute, token),
            message_form=MessageForm(),
            statement_form=StatementForm(),
            can_reopen=dispute.status == DisputeStatus.REPLACED and dispute.reopen_count < services.REOPENS_ALLOWED,
        ),
    )


@require_POST
def buyer_act(request, action: str, pk: int | None = None, order_pk: int | None = None, token: str | None = None):
    """The buyer's answers: a message, accept the replacement, reopen once, escalate to staff."""
    dispute = _buyer_dispute(request, pk=pk, order_pk=order_pk, token=token)
    now, actor = timezone.now(), request.user
    steps = {
        "accept": lambda data: services.dispute_accept(dispute_pk=dispute.pk, now=now, actor=actor),
        "escalate": lambda data: services.dispute_escalate(dispute_pk=dispute.pk, now=now, actor=actor),
        "reopen": lambda data: services.dispute_reopen(
            dispute_pk=dispute.pk, statement=data["statement"], now=now, actor=actor
        ),
        "message": lambda data: services.dispute_message_post(
            dispute_pk=dispute.pk, role=MessageRole.BUYER, body=data["body"], now=now, author=actor
        ),
    }
    return party_step_run(
        request,
        dispute=dispute,
        steps=steps,
        action=action,
        role=MessageRole.BUYER,
        now=now,
        back=_buyer_urls(dispute, token)["page"],
    )


# --- screenshots ----------------------------------------------------------------------------------------------


@never_cache
def attachment(request, attachment_pk: int, pk: int | None = None, order_pk: int | None = None, token=None):
    """One screenshot, to the dispute's two parties and staff only (404 for anyone else), as a download
    the browser must not sniff into anything but the image type it was re-encoded as."""
    if token:
        dispute = _buyer_dispute(request, order_pk=order_pk, token=token)
    else:
        dispute, _role = dispute_for_viewer(pk=pk, user=request.user, order_token=None)
    item = get_object_or_404(Attachment, pk=attachment_pk, dispute=dispute)
    path = attachment_path(item)
    if not path.is_file():
        raise Http404
    response = FileResponse(path.open("rb"), content_type=item.content_type, as_attachment=True)
    response["Content-Disposition"] = f'attachment; filename="dispute-{dispute.pk}-{item.pk}.{path.suffix[1:]}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


# --- the inbox ----------------------------------------------------------------------------------------------------


@login_required
def inbox(request):
    items = Notification.objects.filter(user=request.user)[:200]
    return render(request, "disputes/inbox.html", {"items": items})


@login_required
def inbox_open(request, pk: int):
    """Open one notification: it is marked read and the reader goes to the dispute."""
    item = get_object_or_404(Notification, pk=pk, user=request.user)
    notification_read(notification=item, now=timezone.now())
    return redirect(item.url)
