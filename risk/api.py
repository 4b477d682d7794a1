"""The staff API of the risk engine: the review queue and the stored decisions.

Authentication comes from `settings.RISK_STAFF_AUTHENTICATION_CLASSES` (the staff API token and a
session), so risk names no other app; a session must have passed the second factor."""

from datetime import datetime

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import permissions, serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.settings import perform_import
from rest_framework.views import APIView

from core.api import error_responses
from core.errors import Refused
from risk import selectors, services
from risk.models import Decision, ReviewItem

AUTHENTICATION = perform_import(settings.RISK_STAFF_AUTHENTICATION_CLASSES, "RISK_STAFF_AUTHENTICATION_CLASSES")
STAFF_ERRORS = {401: ["not_authenticated", "authentication_failed"], 403: ["permission_denied"]}


class IsVerifiedStaff(permissions.BasePermission):
    """Staff with a token (minted behind a fresh second factor) or a session that passed one."""

    message = _("Staff only, signed in with a second factor.")

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_staff and user.is_active):
            return False
        if isinstance(request.successful_authenticator, SessionAuthentication):
            return bool(getattr(user, "is_verified", lambda: False)())
        return True


class StaffView(APIView):
    authentication_classes = AUTHENTICATION
    permission_classes = [IsVerifiedStaff]


def review_item_json(item: ReviewItem) -> dict:
    return {
        "id": item.pk,
        "kind": item.kind,
        "subject": {"type": item.kind, "id": int(item.subject_id), "email": item.email},
        "reasons": item.reasons,
        "created_at": item.created_at,
        "status": item.status,
        "decision": item.decision_id,
    }


ReviewItemSchema = inline_serializer(
    "RiskReviewItem",
    {
        "id": serializers.IntegerField(),
        "kind": serializers.ChoiceField(["order", "withdrawal", "dispute", "user", "merchant"]),
        "subject": inline_serializer(
            "RiskReviewSubject",
            {"type": serializers.CharField(), "id": serializers.IntegerField(), "email": serializers.CharField()},
        ),
        "reasons": serializers.ListField(child=serializers.DictField()),
        "created_at": serializers.DateTimeField(),
        "status": serializers.CharField(),
        "decision": serializers.IntegerField(allow_null=True),
    },
)


class ReviewQueue(StaffView):
    @extend_schema(
        responses={
            200: inline_serializer("RiskReviewQueue", {"results": serializers.ListField(child=ReviewItemSchema)}),
            **error_responses(STAFF_ERRORS),
        }
    )
    def get(self, request):
        """Everything waiting for staff, oldest first: held orders (risk holds and mismatched payments),
        held withdrawals, flagged disputes, frozen accounts, flagged merchants."""
        return Response({"results": [review_item_json(item) for item in selectors.review_items_open()]})


class ReviewDecisionSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)
    # Approving a held withdrawal may pay it out at once with the reference of the payment staff made.
    payout_reference = serializers.CharField(max_length=128, required=False, allow_blank=True)


class _ReviewDecide(StaffView):
    approve = True

    @extend_schema(
        request=ReviewDecisionSerializer,
        responses={
            200: ReviewItemSchema,
            **error_responses(
                {
                    **STAFF_ERRORS,
                    400: ["invalid", "underpaid", "wrong_currency", "payout_reference_required"],
                    404: ["not_found"],
                    409: ["already_decided", "not_held", "out_of_stock", "bad_state"],
                }
            ),
        },
    )
    def post(self, request, pk: int):
        data = ReviewDecisionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        params = {}
        if self.approve and data.validated_data.get("payout_reference"):
            params["payout_reference"] = data.validated_data["payout_reference"]
        item = services.review_decide(
            item_pk=pk,
            approve=self.approve,
            staff=request.user,
            now=timezone.now(),
            note=data.validated_data["reason"],
            params=params,
        )
        return Response(review_item_json(item))


class ReviewApprove(_ReviewDecide):
    """Approve: deliver the order, clear (or pay out) the withdrawal, unfreeze the account, lift the
    merchant's raised reserve, clear the dispute's flag."""

    approve = True


class ReviewReject(_ReviewDecide):
    """Reject: refund the order in full, return the withdrawal's money, keep the account frozen, keep
    the merchant's reserve raised, confirm the dispute's flag."""

    approve = False


def decision_json(decision: Decision) -> dict:
    return {
        "id": decision.pk,
        "at": decision.at,
        "event": decision.event,
        "outcome": decision.outcome,
        "score": decision.score,
        "reasons": [
            {key: reason.get(key) for key in ("rule", "signal", "value", "threshold")} for reason in decision.reasons
        ],
        "signals": decision.signals,
        "subject": {"type": decision.subject_type or None, "id": decision.subject_id or None},
    }


class DecisionList(StaffView):
    @extend_schema(
        parameters=[
            OpenApiParameter("since", str, description="ISO 8601 date-time: decisions at or after it"),
            OpenApiParameter("event", str),
            OpenApiParameter("outcome", str),
            OpenApiParameter("subject_type", str),
            OpenApiParameter("subject_id", str),
            OpenApiParameter("limit", int, description="At most this many, newest first (default 100, at most 1000)"),
        ],
        responses={
            200: inline_serializer(
                "RiskDecisions",
                {
                    "results": serializers.ListField(
                        child=inline_serializer(
                            "RiskDecision",
                            {
                                "id": serializers.IntegerField(),
                                "at": serializers.DateTimeField(),
                                "event": serializers.CharField(),
                                "outcome": serializers.CharField(),
                                "score": serializers.IntegerField(),
                                "reasons": serializers.ListField(child=serializers.DictField()),
                                "signals": serializers.DictField(),
                                "subject": serializers.DictField(),
                            },
                        )
                    )
                },
            ),
            **error_responses({**STAFF_ERRORS, 400: ["invalid"]}),
        },
    )
    def get(self, request):
        query = request.query_params
        since: datetime | None = None
        if query.get("since"):
            since = parse_datetime(query["since"].replace(" ", "+"))
            if since is None:
                raise Refused(_("since: give an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z."))
            if timezone.is_naive(since):
                since = timezone.make_aware(since, timezone.utc)
        try:
            limit = min(max(int(query.get("limit", 100)), 1), 1000)
        except ValueError:
            raise Refused(_("limit: give a whole number.")) from None
        decisions = selectors.decisions_filter(
            since=since,
            event=query.get("event", ""),
            outcome=query.get("outcome", ""),
            subject_type=query.get("subject_type", ""),
            subject_id=query.get("subject_id", ""),
        )[:limit]
        return Response({"results": [decision_json(decision) for decision in decisions]})
