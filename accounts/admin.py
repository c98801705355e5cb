from collections.abc import Iterable

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied
from django.db import router, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from accounts.models import Account, Asset, AuditLog, Deposit, LedgerEntry, LedgerLine, User, Withdrawal
from accounts.services import audit_record, deposit_approve, deposit_reject, withdrawal_approve, withdrawal_reject
from exchange.admin_tools import AmountsMixin, ReadOnlyAdmin, ReadOnlyInline, run_service_action


class AccountInline(ReadOnlyInline):
    model = Account
    fields = ["asset", "kind", "balance", "updated_at"]
    readonly_fields = fields
    ordering = ["asset", "kind"]


# What makes a user staff and what staff may do: changed only by someone with manage_staff (and
# is_superuser only by a superuser), never by the user themself, and audited.
STAFF_ACCESS_FIELDS = ("is_staff", "groups", "user_permissions")
AUDITED_FIELDS = ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")


def access_change_details(form: forms.ModelForm, fields: Iterable[str]) -> dict[str, object]:
    """What a saved form changed of `fields`, by name, for an audit row: groups and permissions
    added and removed, other values from and to."""
    details: dict[str, object] = {}
    for name in fields:
        if name not in form.changed_data:
            continue
        before, after = form.initial.get(name), form.cleaned_data.get(name)
        if isinstance(form.fields[name], forms.ModelMultipleChoiceField):
            old, new = _access_labels(before or []), _access_labels(after or [])
            details[name] = {"added": sorted(new - old), "removed": sorted(old - new)}
        else:
            details[name] = {"from": before, "to": after}
    return details


def _access_labels(objects: Iterable[Group | Permission]) -> set[str]:
    """Groups by name, permissions as `app_label.codename` (what has_perm takes)."""
    objects = list(objects)
    permissions = [o.pk for o in objects if isinstance(o, Permission)]
    labels = {o.name for o in objects if isinstance(o, Group)}
    labels.update(
        f"{app}.{codename}"
        for app, codename in Permission.objects.filter(pk__in=permissions).values_list(
            "content_type__app_label", "codename"
        )
    )
    return labels


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "email", "is_staff", "is_active", "date_joined", "last_login"]
    list_filter = ["is_staff", "is_superuser", "is_active", "groups"]
    search_fields = ["username", "email", "=id"]
    inlines = [AccountInline]
    show_full_result_count = False

    def has_manage_staff_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.manage_staff")

    def has_change_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        # A superuser's account is a superuser's business: whoever could change its password or
        # flags would hold every permission there is.
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: User | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is None:
            return readonly  # the add form sets a username and a password, nothing else
        own = obj.pk == request.user.pk
        if own or not self.has_manage_staff_permission(request):
            readonly += STAFF_ACCESS_FIELDS
        if own or not request.user.is_superuser:
            readonly.append("is_superuser")
        return readonly

    def save_related(self, request: HttpRequest, form: forms.ModelForm, formsets: list, change: bool) -> None:
        # The admin saves the user, then here its groups and permissions, in one transaction: the
        # audit row joins it.
        super().save_related(request, form, formsets, change)
        details = access_change_details(form, AUDITED_FIELDS)
        if details:
            user = form.instance
            audit_record(
                actor=request.user,
                action="user_access_change",
                target=f"user:{user.pk}",
                username=user.get_username(),
                **details,
            )

    @method_decorator(sensitive_post_parameters())
    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        """Someone else's password only with manage_staff; a password set here is audited in the
        transaction that sets it."""
        user = self.get_object(request, unquote(id))
        if user is not None and user.pk != request.user.pk and not self.has_manage_staff_permission(request):
            raise PermissionDenied
        with transaction.atomic(using=router.db_for_write(User)):
            response = super().user_change_password(request, id, form_url)
            if user is not None and request.method == "POST":
                stored = User.objects.filter(pk=user.pk).values_list("password", flat=True).first()
                if stored != user.password:
                    audit_record(
                        actor=request.user,
                        action="user_password_set",
                        target=f"user:{user.pk}",
                        username=user.get_username(),
                        own=user.pk == request.user.pk,
                        usable=not stored.startswith(UNUSABLE_PASSWORD_PREFIX),
                    )
        return response


@admin.register(Asset)
class AssetAdmin(AmountsMixin, admin.ModelAdmin):
    list_display = ["symbol", "name", "decimals", "deposit_review_threshold", "withdrawals_enabled", "created_at"]
    search_fields = ["symbol", "name"]

    # Changing an asset's precision under existing balances would reinterpret them.
    fields = ["symbol", "name", "decimals", "deposit_review_threshold", "created_at"]
    readonly_fields = ["created_at"]
    change_readonly_fields = ["symbol", "decimals"]

    def has_delete_permission(self, request: HttpRequest, obj: Asset | None = None) -> bool:
        return False


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "asset", "kind", "balance", "updated_at"]
    list_filter = ["kind", "asset"]
    search_fields = ["user__username", "=user__id", "=id"]
    list_select_related = ["user", "asset"]
    raw_id_fields = ["user"]


class LedgerLineInline(ReadOnlyInline):
    model = LedgerLine
    fields = ["account", "asset", "amount"]
    readonly_fields = fields


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "reference", "created_at"]
    list_filter = ["kind", "created_at"]
    search_fields = ["reference", "=id"]
    date_hierarchy = "created_at"
    inlines = [LedgerLineInline]


@admin.register(LedgerLine)
class LedgerLineAdmin(ReadOnlyAdmin):
    list_display = ["id", "entry", "account", "asset", "amount"]
    list_filter = ["asset", "account__kind"]
    search_fields = ["entry__reference", "account__user__username", "=entry__id"]
    list_select_related = ["entry", "account__user", "account__asset", "asset"]
    raw_id_fields = ["entry", "account"]


@admin.register(Deposit)
class DepositAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "asset", "amount", "tx_id", "status", "created_at", "credited_at", "decided_by"]
    list_filter = ["status", "asset", "created_at"]
    search_fields = ["user__username", "tx_id", "=id"]
    list_select_related = ["user", "asset", "decided_by"]
    raw_id_fields = ["user", "decided_by"]
    date_hierarchy = "created_at"
    actions = ["approve", "reject"]

    @admin.action(description="Approve and credit the selected deposits", permissions=["approve"])
    def approve(self, request: HttpRequest, queryset: QuerySet[Deposit]) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda d: deposit_approve(deposit_id=d.pk, acting_user=request.user),
            "deposits credited",
        )

    @admin.action(description="Reject the selected deposits", permissions=["approve"])
    def reject(self, request: HttpRequest, queryset: QuerySet[Deposit]) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda d: deposit_reject(deposit_id=d.pk, acting_user=request.user),
            "deposits rejected",
        )


@admin.register(Withdrawal)
class WithdrawalAdmin(ReadOnlyAdmin):
    list_display = ["id", "user", "asset", "amount", "address", "status", "created_at", "approved_by"]
    list_filter = ["status", "asset", "created_at"]
    search_fields = ["user__username", "address", "=id"]
    list_select_related = ["user", "asset", "approved_by"]
    raw_id_fields = ["user", "approved_by"]
    date_hierarchy = "created_at"
    actions = ["approve", "reject"]

    @admin.action(description="Approve the selected withdrawals (funds leave)", permissions=["approve"])
    def approve(self, request: HttpRequest, queryset: QuerySet[Withdrawal]) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda w: withdrawal_approve(withdrawal_id=w.pk, acting_user=request.user),
            "withdrawals approved",
        )

    @admin.action(description="Reject the selected withdrawals (funds return)", permissions=["approve"])
    def reject(self, request: HttpRequest, queryset: QuerySet[Withdrawal]) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda w: withdrawal_reject(withdrawal_id=w.pk, acting_user=request.user),
            "withdrawals rejected",
        )


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor", "action", "target", "details"]
    list_filter = ["action", "created_at"]
    search_fields = ["target", "actor__username"]
    list_select_related = ["actor"]
    date_hierarchy = "created_at"
