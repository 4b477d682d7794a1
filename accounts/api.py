"""The accounts API: sign up as a buyer, and trade an e-mail and password (and a code, where the account
has a second factor) for an API token. Errors are `{"detail","code"}` like everywhere under /api/v1/."""

from django.contrib.auth import authenticate
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

import risk
from accounts import account_services, services
from accounts.account_services import AccountRefused
from accounts.models import SignInMethod, User
from accounts.views import sign_in_note
from core.api import error_responses
from core.client_ip import client_ip
from core.ratelimit import RateLimited, rate_limit_hit


class SignUpSerializer(serializers.Serializer):
    email = serializers.CharField(max_length=254)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


class TokenRequestSerializer(serializers.Serializer):
    email = serializers.CharField(max_length=254, help_text="The e-mail address (or the username).")
    password = serializers.CharField(max_length=4096, trim_whitespace=False)
    otp = serializers.CharField(
        max_length=16, required=False, allow_blank=True, help_text="A TOTP code or a backup code."
    )


class SignUp(APIView):
    authentication_classes: list = []  # no session, so no CSRF: a script signs up with a plain POST

    @extend_schema(
        request=SignUpSerializer,
        responses={
            201: inline_serializer("SignedUp", {"id": serializers.IntegerField(), "token": serializers.CharField()}),
            **error_responses(
                {
                    400: ["invalid", "parse_error", "bad_email", "email_taken", "weak_password"],
                    # With "decision": the id of the stored risk decision staff can read.
                    403: ["challenge_required", "risk_blocked"],
                    429: ["throttled"],
                }
            ),
        },
    )
    def post(self, request):
        """Create a buyer account and return its first API token. The e-mail gets a verification link.

        The risk engine assesses the sign-up first (sign-ups per address, network, device): a block is
        403 `risk_blocked`, a challenge 403 `challenge_required` (an API client cannot answer a captcha:
        sign up on the web page), both with the stored `decision`'s id; nothing is created then."""
        data = SignUpSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ip = client_ip(request)
        decision = rate_limit_hit(scope="signup", identity=ip)
        if not decision.allowed:
            raise RateLimited("signup", decision.retry_after)
        now = timezone.now()
        decision = risk.signup_assess(request=request._request, email=data.validated_data["email"], now=now)
        user = account_services.account_signup(
            email=data.validated_data["email"], password=data.validated_data["password"], now=now, ip=ip
        )
        risk.decision_subject_set(decision=decision, subject=("user", user.pk))
        _record, token = account_services.account_api_token_create(user=user, name=_("Sign-up"), now=now, ip=ip)
        sign_in_note(request, user=user, method=SignInMethod.SIGNUP, success=True)
        return Response({"id": user.pk, "token": token}, status=status.HTTP_201_CREATED)


class TokenIssue(APIView):
    authentication_classes: list = []

    @extend_schema(
        request=TokenRequestSerializer,
        responses={
            200: inline_serializer("IssuedToken", {"token": serializers.CharField()}),
            **error_responses(
                {
                    400: ["invalid", "parse_error"],
                    401: ["invalid_credentials", "otp_required", "bad_otp"],
                    # With "decision": the id of the stored risk decision staff can read.
                    403: ["challenge_required", "risk_blocked"],
                    429: ["locked_out"],
                }
            ),
        },
    )
    def post(self, request):
        """A new API token (`Authorization: Token <token>`). Merchants and staff, and buyers who enrolled
        an authenticator app, must also send `otp`; without it the answer is 401 `otp_required`.

        Assessed by the risk engine as a sign-in (`login`, as the sign-in page) once the credentials
        are right: a block (or a frozen account's) is 403 `risk_blocked`; a challenge is passed by the
        second factor sent with the request, else 403 `challenge_required`; both carry the `decision`."""
        data = TokenRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        email, password = data.validated_data["email"].strip(), data.validated_data["password"]
        otp = (data.validated_data.get("otp") or "").strip()
        django_request = request._request  # django-axes counts failures on Django's request
        user = authenticate(django_request, username=email, password=password)
        if user is None:
            owner = self._owner(email)
            locked = getattr(django_request, "axes_locked_out", False)
            if owner is not None:
                reason = "locked_out" if locked else "bad_password"
                sign_in_note(request, user=owner, method=SignInMethod.API, success=False, reason=reason)
            if locked:
                raise AccountRefused(_("Too many failed sign-in attempts. Try again later."), code="locked_out")
            raise AccountRefused(_("Wrong e-mail address or password."), code="invalid_credentials")
        if account_services.second_factor_needed(user):
            if not otp:
                sign_in_note(request, user=user, method=SignInMethod.API, success=False, reason="otp_required")
                raise AccountRefused(
                    _("This account signs in with a second factor: send 'otp', a code from your app or a backup code."),
                    code="otp_required",
                )
            try:
                services.otp_sign_in_verify(user=user, code=otp, now=timezone.now())
            except services.TwoFactorRequired:
                sign_in_note(request, user=user, method=SignInMethod.API, success=False, reason="otp_required")
                raise AccountRefused(
                    _("Merchants and staff must set up two-factor authentication before using the API."),
                    code="otp_required",
                ) from None
            except services.TwoFactorInvalid:
                sign_in_note(request, user=user, method=SignInMethod.API, success=False, reason="bad_otp")
                raise AccountRefused(_("That code is wrong or was already used."), code="bad_otp") from None
            second_factor = True
        else:
            second_factor = False
        now = timezone.now()
        decision = risk.assess(event="login", context=risk.context_from_request(django_request, user=user), now=now)
        try:
            risk.decision_enforce(decision=decision, challenge_passed=second_factor)
        except risk.RiskRefused:
            sign_in_note(request, user=user, method=SignInMethod.API, success=False, reason="risk")
            raise
        _record, token = account_services.account_api_token_create(
            user=user, name=_("API sign-in"), now=now, ip=client_ip(request)
        )
        risk.decision_subject_set(decision=decision, subject=("user", user.pk), challenge_passed=second_factor)
        sign_in_note(request, user=user, method=SignInMethod.API, success=True)
        return Response({"token": token})

    @staticmethod
    def _owner(name: str) -> User | None:
        if "@" in name:
            return User.objects.filter(email__iexact=name).first()
        return User.objects.filter(username=name).first()
