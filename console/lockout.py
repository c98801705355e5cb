"""django-axes, fitted to the exchange's sign-ins: which logins it counts, the client's address, the
username it counts under, the limits and the admin's lock-out page.

Two doors take a password: the admin's login form and the API's token login (and the API's password
change, which asks for the current one). Both count failures against the same username, because
they guess the same password: a guesser who finds the admin locked must not carry on through the
API. Each door has its own limit and cool-off (`ADMIN_LOGIN_*`, `API_LOGIN_*`). The settings
(exchange/settings.py, "Sign-in") point axes at the pieces here.
"""

from datetime import datetime, timedelta

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_cool_off, get_failure_limit
from axes.models import AccessAttempt, AccessLog
from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from core.addresses import client_ip

__all__ = [
    "SignInHandler",
    "client_ip",
    "cool_off",
    "failure_limit",
    "locked",
    "locked_out_response",
    "username_of",
]

# The API views that take a password (URL names in exchange/urls.py).
API_SIGN_INS = frozenset({"token", "password-change"})


def is_api_sign_in(request: HttpRequest | None) -> bool:
    match = getattr(request, "resolver_match", None)
    return match is not None and match.url_name in API_SIGN_INS


def failure_limit(request: HttpRequest | None, credentials: dict | None = None) -> int:
    return settings.API_LOGIN_FAILURE_LIMIT if is_api_sign_in(request) else settings.ADMIN_LOGIN_FAILURE_LIMIT


def cool_off(request: HttpRequest | None = None) -> timedelta:
    seconds = settings.API_LOGIN_COOLOFF_SECONDS if is_api_sign_in(request) else settings.ADMIN_LOGIN_COOLOFF_SECONDS
    return timedelta(seconds=seconds)


def locked(failures: int, last_failure: datetime) -> bool:
    """Whether this many failures, the last at that time, lock a username out of either door."""
    age = timezone.now() - last_failure
    doors = (
        (settings.ADMIN_LOGIN_FAILURE_LIMIT, settings.ADMIN_LOGIN_COOLOFF_SECONDS),
        (settings.API_LOGIN_FAILURE_LIMIT, settings.API_LOGIN_COOLOFF_SECONDS),
    )
    return any(failures >= limit and age <= timedelta(seconds=seconds) for limit, seconds in doors)


def username_of(request: HttpRequest, credentials: dict | None) -> str | None:
    """The username a failure counts against, in lower case: `Alice` and `ALICE` are one account
    (logins ignore case), so guessing through case variants gets no extra tries."""
    username = (credentials or {}).get("username")
    if username is None:
        username = request.POST.get("username")
    return username.lower() if isinstance(username, str) else username


class SignInHandler(AxesDatabaseHandler):
    """Axes' database handler for the admin's login and the API's password endpoints, and nothing else.

    Outside those doors a request is neither counted nor refused. A successful API login clears its
    username's count and is recorded like an admin sign-in, without the session axes would create.
    """

    def counts(self, request: HttpRequest | None) -> bool:
        return request is not None and (self.is_admin_request(request) or is_api_sign_in(request))

    def is_allowed(self, request: HttpRequest, credentials: dict | None = None) -> bool:
        return not self.counts(request) or super().is_allowed(request, credentials)

    def user_login_failed(self, sender: object, credentials: dict, request: HttpRequest | None = None, **kwargs):
        if self.counts(request):
            super().user_login_failed(sender, credentials, request, **kwargs)

    def user_logged_in(self, sender: object, request: HttpRequest, user: object, **kwargs) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_logged_in(sender, request, user, **kwargs)
        elif is_api_sign_in(request):
            self.clean_expired_user_attempts(request)
            AccessLog.objects.create(
                username=user.get_username(),
                ip_address=request.axes_ip_address,
                user_agent=request.axes_user_agent,
                http_accept=request.axes_http_accept,
                path_info=request.axes_path_info,
                attempt_time=request.axes_attempt_time,
            )
            self.reset_user_attempts(request, {"username": user.get_username()})

    def user_logged_out(self, sender: object, request: HttpRequest, user: object, **kwargs) -> None:
        if request is not None and self.is_admin_request(request):
            super().user_logged_out(sender, request, user, **kwargs)

    def clean_expired_user_attempts(self, request: HttpRequest | None = None, credentials: dict | None = None) -> int:
        """Forget failures older than the longest cool-off: an API login (shorter cool-off) must not
        clear the failures the admin's lock-out still counts."""
        longest = max(settings.API_LOGIN_COOLOFF_SECONDS, settings.ADMIN_LOGIN_COOLOFF_SECONDS)
        count, _ = AccessAttempt.objects.filter(attempt_time__lte=timezone.now() - timedelta(seconds=longest)).delete()
        return count


def locked_out_response(request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None):
    """The page a locked-out login gets instead of the login form (status 429)."""
    period = get_cool_off(request)
    context = {
        **admin.site.each_context(request),
        "title": "Sign-in locked",
        "username": (credentials or {}).get("username") or request.POST.get("username", ""),
        "failure_limit": get_failure_limit(request, credentials),
        "cool_off_minutes": round(period.total_seconds() / 60) if period else None,
    }
    return render(request, "console/locked_out.html", context, status=429)
