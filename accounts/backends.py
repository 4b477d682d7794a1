"""Sign in with the e-mail address or the username, and the same password."""

from django.contrib.auth.backends import ModelBackend

from accounts.models import User


class EmailOrUsernameBackend(ModelBackend):
    """Django's ModelBackend, also finding the user by e-mail (unique, any case) when the name typed
    holds an "@". Unknown names still cost one password hash, as in ModelBackend (no timing oracle)."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username and "@" in username:
            owner = User.objects.filter(email__iexact=username.strip()).first()
            if owner is not None:
                username = owner.get_username()
        return super().authenticate(request, username=username, password=password, **kwargs)
