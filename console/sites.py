"""The admin site: the operators' dashboard, and sign-in with a second factor.

exchange/apps.py makes this the default site, so every app's `admin.site.register` lands here.
"""

import base64

import segno
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django_otp import login as otp_login

from console.forms import AdminLoginForm, TwoFactorEnrolForm
from console.selectors import operator_dashboard, second_factor_satisfied, totp_devices_confirmed
from console.services import two_factor_device_pending, two_factor_enrol
from core.errors import ExchangeError
from settlement.selectors import operations_overview


class ExchangeAdminSite(admin.AdminSite):
    site_header = "Exchange operations"
    site_title = "Exchange operations"
    index_title = "Accounts, markets and settlement"
    login_form = AdminLoginForm
    login_template = "console/login.html"

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        context = {
            "overview": operations_overview(),
            "dashboard": operator_dashboard(user=request.user),
            **(extra_context or {}),
        }
        return super().index(request, context)

    def has_permission(self, request: HttpRequest) -> bool:
        """An active staff user whose session has the second factor it needs (see
        `second_factor_satisfied`). Logging out needs no second factor: one who never gave it must
        still be able to leave."""
        if not super().has_permission(request):
            return False
        if second_factor_satisfied(user=request.user):
            return True
        return request.path == reverse("admin:logout", current_app=self.name)

    def needs_enrolment(self, request: HttpRequest) -> bool:
        """A staff user signed in with a password alone, whom the site sends to set up an app."""
        user = request.user
        return (
            user.is_active
            and user.is_staff
            and not second_factor_satisfied(user=user)
            and not totp_devices_confirmed(user=user)
        )

    @method_decorator(never_cache)
    @login_not_required
    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if request.method == "GET" and self.needs_enrolment(request):
            return HttpResponseRedirect(self.enrolment_url(request))
        return super().login(request, extra_context)

    def enrolment_url(self, request: HttpRequest) -> str:
        url = reverse("admin:two_factor_enrol", current_app=self.name)
        following = self.next_url(request)
        return f"{url}?{urlencode({'next': following})}" if following else url

    @staticmethod
    def next_url(request: HttpRequest) -> str | None:
        """Where the user was going, if it is a page of this site's host."""
        following = request.GET.get("next")
        safe = url_has_allowed_host_and_scheme(
            following, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
        return following if safe else None

    def get_urls(self) -> list:
        return [path("two-factor/", self.two_factor_enrol_view, name="two_factor_enrol"), *super().get_urls()]

    @method_decorator(sensitive_post_parameters("otp_token"))
    @method_decorator(csrf_protect)
    @method_decorator(never_cache)
    def two_factor_enrol_view(self, request: HttpRequest) -> HttpResponse:
        """Set up an authenticator app: a QR code and the key, then the first code it shows.

        Open to a signed-in staff user without a confirmed device, the one page such a user reaches
        while ADMIN_REQUIRE_2FA is on (and one they may visit when it is off). A good first code
        confirms the device and makes this session verified, as a sign-in with a code would.
        """
        user = request.user
        login_url = reverse("admin:login", current_app=self.name)
        if not (user.is_active and user.is_staff):
            return redirect_to_login(request.get_full_path(), login_url)
        if totp_devices_confirmed(user=user):
            if user.is_verified():
                messages.info(request, "Your authenticator app is already set up.")
                return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
            # A device set up elsewhere while this session lacked it: sign in again with its code.
            return redirect_to_login(request.get_full_path(), login_url)

        form = TwoFactorEnrolForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            try:
                device = two_factor_enrol(user=user, token=form.cleaned_data["otp_token"])
            except ExchangeError as exc:
                form.add_error("otp_token" if "otp_token" in exc.fields else None, exc.message)
            else:
                otp_login(request, device)
                messages.success(request, "Your authenticator app is set up: sign-ins now ask for its code.")
                return HttpResponseRedirect(self.next_url(request) or reverse("admin:index", current_app=self.name))

        device = two_factor_device_pending(user=user)
        secret = base64.b32encode(device.bin_key).decode()
        context = {
            **self.each_context(request),
            "title": "Set up two-factor sign-in",
            "form": form,
            "qr_svg": mark_safe(segno.make(device.config_url, error="m").svg_inline(scale=5)),  # noqa: S308
            "secret": secret,
            "secret_groups": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
            "required": settings.ADMIN_REQUIRE_2FA,
        }
        request.current_app = self.name
        return TemplateResponse(request, "console/two_factor_enrol.html", context)
