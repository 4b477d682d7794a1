"""Token scopes: which calls an API token may make.

A view names the scope each method needs in `required_scopes` (`{"GET": "read", "POST": "stock"}`; a
tuple asks for all of them). The token is `request.auth`; any token object with a `scopes` attribute (a
list of names) works, whichever app made it. A session (no token: `request.auth` is None) holds every
scope: the merchant is at the keyboard. A token without `scopes` holds none. A call outside the scope
answers 403 `{"detail", "code": "scope"}`.
"""

from django.utils.translation import gettext as _
from rest_framework.permissions import BasePermission

SCOPE_CODE = "scope"


def scopes_needed(view, method: str) -> tuple[str, ...]:
    needed = getattr(view, "required_scopes", {}).get("GET" if method == "HEAD" else method, ())
    return (needed,) if isinstance(needed, str) else tuple(needed)


class ScopeRequired(BasePermission):
    """The token holds every scope the view names for this method (a session holds them all)."""

    code = SCOPE_CODE

    def has_permission(self, request, view) -> bool:
        needed = scopes_needed(view, request.method)
        if not needed or request.auth is None:
            return True
        held = set(getattr(request.auth, "scopes", None) or ())
        missing = [scope for scope in needed if scope not in held]
        if missing:
            self.message = _("This token does not have the scope this call needs: %(scopes)s.") % {
                "scopes": ", ".join(missing)
            }
            return False
        return True


def scopes_description(view, method: str) -> str:
    """The sentence the OpenAPI schema shows for the scopes of one operation."""
    needed = scopes_needed(view, method)
    if not needed:
        return ""
    return "Token scope: " + " + ".join(f"`{scope}`" for scope in needed) + " (a session has every scope)."
