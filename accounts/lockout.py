"""Login lockout: per username and address, and per address across usernames (password spraying).

django-axes compares one failure count with one limit. `AXES_LOCKOUT_PARAMETERS` lists the
username+address pair first and the address alone second; this handler counts both and scales the
address's count to `AXES_FAILURE_LIMIT`, so the pair locks after `AXES_FAILURE_LIMIT` failures and
the address after `LOGIN_FAILURE_LIMIT_PER_IP`. Someone else failing from a shared address therefore
never locks a different user out, until the address as a whole looks like a spray.
"""

from axes.handlers.database import AxesDatabaseHandler
from django.conf import settings
from django.db.models import Sum


class UserThenAddressHandler(AxesDatabaseHandler):
    def get_failures(self, request, credentials=None) -> int:
        per_pair, per_address = (
            attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        )
        user_limit = settings.AXES_FAILURE_LIMIT
        # floor(a * U / A) reaches U exactly when a reaches A.
        return max(per_pair, per_address * user_limit // settings.LOGIN_FAILURE_LIMIT_PER_IP)
