from datetime import datetime

from django import template
from django.utils import timezone
from django.utils.translation import gettext as _

register = template.Library()


@register.filter
def dispute_window_open(order) -> bool:
    """The order page offers a dispute while the inspection window is open (the service checks it again)."""
    ends = getattr(order, "inspection_ends_at", None)
    return order.status == "delivered" and ends is not None and ends > timezone.now()


@register.filter
def remaining(deadline: datetime) -> str:
    """The time left until `deadline`, in words the countdown script keeps ticking down."""
    seconds = int((deadline - timezone.now()).total_seconds())
    if seconds <= 0:
        return _("the deadline has passed")
    hours, rest = divmod(seconds, 3600)
    return _("%(hours)d h %(minutes)02d min left") % {"hours": hours, "minutes": rest // 60}
