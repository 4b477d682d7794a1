from accounts.models import Notification


def inbox(request) -> dict:
    """The unread count in the header: one COUNT query, and none at all for visitors."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"inbox_unread": Notification.objects.filter(user=user, read_at__isnull=True).count()}
