"""The admin pages the console owns: roles (groups), second factors and login records, and the
second-factor action on users (the rest of the user admin, with its no-escalation rules, is
accounts'; the console, the layer above, adds what only it knows)."""

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.auth.admin import GroupAdmin
from django.contrib.auth.models import Group
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.admin import UserAdmin, access_change_details
from accounts.models import User
from accounts.services import audit_record
from console.forms import SecondFactorResetForm
from console.lockout import locked
from console.services import login_unlock, two_factor_reset
from core.admin_tools import ReadOnlyAdmin, run_service_action

admin.site.unregister(User)
admin.site.unregister(Group)
admin.site.unregister(TOTPDevice)


@admin.register(User)
class OperatorUserAdmin(UserAdmin):
    actions = [*UserAdmin.actions, "reset_second_factor"]

    def get_list_display(self, request: HttpRequest) -> list:
        return [*super().get_list_display(request), "second_factor"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        devices = TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)
        return super().get_queryset(request).annotate(has_second_factor=Exists(devices))

    @admin.display(description="second factor", boolean=True, ordering="has_second_factor")
    def second_factor(self, user: User) -> bool:
        return user.has_second_factor

    @admin.action(description="Reset second factor", permissions=["manage_staff"])
    def reset_second_factor(self, request: HttpRequest, queryset: QuerySet[User]) -> TemplateResponse | None:
        """Delete the selected users' authenticator apps, after a page that asks why."""
        form = SecondFactorResetForm(request.POST if request.POST.get("confirmed") else None)
        if form.is_valid():
            reason = form.cleaned_data["reason"]
            run_service_action(
                self,
                request,
                queryset,
                lambda user: two_factor_reset(user_id=user.pk, acting_user=request.user, reason=reason),
                "second factors reset",
            )
            return None
        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "title": "Reset second factor",
            "queryset": queryset.order_by("username"),
            "form": form,
            "opts": self.opts,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        return TemplateResponse(request, "console/two_factor_reset.html", context)


@admin.register(Group)
class RoleAdmin(GroupAdmin):
    """Roles (groups). Changing one changes what every member may do, so it takes manage_staff, and
    nobody but a superuser changes a role they hold: that would be granting themselves."""

    list_display = ["name", "member_count"]
    readonly_fields = ["members"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Group]:
        return super().get_queryset(request).prefetch_related("user_set")

    @admin.display(description="members")
    def member_count(self, group: Group) -> int:
        return len(group.user_set.all())

    @admin.display(description="members")
    def members(self, group: Group) -> str:
        return ", ".join(sorted(u.get_username() for u in group.user_set.all())) or "nobody"

    def _may_manage(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.manage_staff")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._may_manage(request) and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Group | None = None) -> bool:
        if not (self._may_manage(request) and super().has_change_permission(request, obj)):
            return False
        held = obj is not None and request.user.groups.filter(pk=obj.pk).exists()
        return request.user.is_superuser or not held

    def has_delete_permission(self, request: HttpRequest, obj: Group | None = None) -> bool:
        return self._may_manage(request) and super().has_delete_permission(request, obj)

    def save_related(self, request: HttpRequest, form, formsets: list, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        details = access_change_details(form, ["name", "permissions"])
        if details:
            group = form.instance
            audit_record(
                actor=request.user, action="group_change", target=f"group:{group.pk}", group=group.name, **details
            )

    def delete_model(self, request: HttpRequest, obj: Group) -> None:
        audit_record(actor=request.user, action="group_delete", target=f"group:{obj.pk}", group=obj.name)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Group]) -> None:
        for group in queryset:
            audit_record(actor=request.user, action="group_delete", target=f"group:{group.pk}", group=group.name)
        super().delete_queryset(request, queryset)


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
        return locked(attempt.failures_since_start, attempt.attempt_time)

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
