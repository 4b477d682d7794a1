from functools import wraps

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect

from accounts.two_factor import two_factor_gate
from shop.models import Merchant


def merchant_required(view=None, *, approved: bool = True):
    """Only a signed-in merchant (approved, unless `approved=False`) reaches the view.

    The view receives `request.merchant`. Others are sent to sign up as a merchant (or to its status
    page while waiting for approval). An approved merchant's session must also have passed a second
    factor (`accounts.two_factor`): without a device they are sent to enrol one, else to the verify page.
    """

    def decorate(view_func):
        @login_required
        @wraps(view_func)
        def wrapper(request, *args, **kwargs):
            merchant = Merchant.objects.filter(user=request.user).first()
            if merchant is None:
                return redirect("merchant:signup")
            if approved and not merchant.is_approved:
                return redirect("merchant:status")
            if approved:
                response = two_factor_gate(request)
                if response is not None:
                    return response
            request.merchant = merchant
            return view_func(request, *args, **kwargs)

        return wrapper

    return decorate(view) if view is not None else decorate
