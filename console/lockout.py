"""django-axes, fitted to the admin: which logins it counts, the client's address, the lock-out page.

The settings (exchange/settings.py, "Operators' sign-in") point axes at the three pieces here.
"""

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from python_ipware import IpWare


class AdminLoginHandler(AxesDatabaseHandler):
    """Axes' database handler, for the admin's logins only.

    `AXES_ONLY_ADMIN_SITE` stops axes from refusing logins outside the admin, but its handler would
    still record the API's failed token requests, count them against the username, and mark the
    request locked out (which would replace DRF's JSON answer with the lock-out page). The API's
    login keeps its own rate limit instead, and the admin's count is the admin's alone.
    """

    def user_login_failed(self, sender: object, credentials: dict, request: HttpRequest | None = None, **kwargs):
        if request is not None and self.is_admin_request(request):
            super().user_login_failed(sender, credentials, request, **kwargs)

    def user_logged_in(self, sender: object, request: HttpRequest, user: object, **kwargs) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_logged_in(sender, request, user, **kwargs)

    def user_logged_out(self, sender: object, request: HttpRequest, user: object, **kwargs) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_logged_out(sender, request, user, **kwargs)


def client_ip(request: HttpRequest) -> str | None:
    """The address a login came from.

    Without proxies it is the connection's. Behind `ADMIN_TRUSTED_PROXIES` proxies, each of which
    appends the address it saw to X-Forwarded-For, the client is the entry that many places from the
    right: whatever a client writes into the header itself stays to the left of it.
    """
    proxies = settings.ADMIN_TRUSTED_PROXIES
    if proxies:
        forwarded, _ = IpWare(precedence=("HTTP_X_FORWARDED_FOR",), proxy_count=proxies - 1).get_client_ip(request.META)
        if forwarded is not None:
            return str(forwarded)
    return request.META.get("REMOTE_ADDR")


def locked_out_response(request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None):
    """The page a locked-out login gets instead of the login form (status 429)."""
    cool_off = get_cool_off(request)
    context = {
        **admin.site.each_context(request),
        "title": "Sign-in locked",
        "username": (credentials or {}).get("username") or request.POST.get("username", ""),
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "cool_off_minutes": round(cool_off.total_seconds() / 60) if cool_off else None,
    }
    return render(request, "console/locked_out.html", context, status=429)
