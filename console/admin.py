"""The admin pages the console owns: second factors and login records."""

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.conf import settings
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from console.services import login_unlock
from exchange.admin_tools import ReadOnlyAdmin

admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(ReadOnlyAdmin):
    """Who has set up an authenticator app. The keys are never shown; removing one is the audited
    "Reset second factor" action on users."""

    list_display = ["user", "name", "confirmed", "created_at", "last_used_at", "throttling_failure_count"]
    list_filter = ["confirmed"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
    fields = list_display


class LoginRecordAdmin(ReadOnlyAdmin):
    list_filter = ["attempt_time"]
    search_fields = ["username", "ip_address", "user_agent"]
    date_hierarchy = "attempt_time"


@admin.register(AccessLog)
class AccessLogAdmin(LoginRecordAdmin):
    """Every successful admin sign-in, with where from, and when the session logged out."""

    list_display = ["attempt_time", "username", "ip_address", "user_agent", "logout_time"]
    fields = ["username", "attempt_time", "logout_time", "ip_address", "user_agent", "http_accept", "path_info"]


@admin.register(AccessFailureLog)
class AccessFailureLogAdmin(LoginRecordAdmin):
    """Every failed admin sign-in (wrong password or wrong code), and whether it locked the username out."""

    list_display = ["attempt_time", "username", "ip_address", "user_agent", "locked_out"]
    list_filter = ["locked_out", "attempt_time"]
    fields = ["username", "attempt_time", "locked_out", "ip_address", "user_agent", "http_accept", "path_info"]


@admin.register(AccessAttempt)
class AccessAttemptAdmin(LoginRecordAdmin):
    """The failures django-axes is counting, one row per username, address and browser. Deleting a
    username's rows (the "Unlock" action, audited) lifts its lock-out at once."""

    list_display = ["attempt_time", "username", "ip_address", "user_agent", "failures_since_start", "locked_out"]
    fields = ["username", "attempt_time", "failures_since_start", "ip_address", "user_agent", "path_info"]
    actions = ["unlock"]

    @admin.display(description="locked out", boolean=True)
    def locked_out(self, attempt: AccessAttempt) -> bool:
        recent = attempt.attempt_time >= timezone.now() - settings.AXES_COOLOFF_TIME
        return recent and attempt.failures_since_start >= settings.AXES_FAILURE_LIMIT

    def has_delete_permission(self, request: HttpRequest, obj: AccessAttempt | None = None) -> bool:
        # ReadOnlyAdmin refuses every deletion; these rows are the one thing here an operator removes.
        return admin.ModelAdmin.has_delete_permission(self, request, obj)

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Unlock: forget the selected failed logins", permissions=["delete"])
    def unlock(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        count = login_unlock(attempt_ids=queryset.values_list("pk", flat=True), acting_user=request.user)
        self.message_user(request, f"{count} failed-login records forgotten; those usernames may sign in again.")

    def delete_model(self, request: HttpRequest, obj: AccessAttempt) -> None:
        login_unlock(attempt_ids=[obj.pk], acting_user=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        login_unlock(attempt_ids=queryset.values_list("pk", flat=True), acting_user=request.user)
