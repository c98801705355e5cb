import re
from collections.abc import Callable, Iterable
from decimal import Decimal

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
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from accounts.exports import CsvExportMixin
from accounts.models import (
    Account,
    Asset,
    AuditLog,
    BalanceAdjustment,
    Deposit,
    DepositAddress,
    LedgerEntry,
    LedgerLine,
    Login,
    User,
    UserRestriction,
    Withdrawal,
)
from accounts.selectors import adjustments_awaiting, deposits_awaiting, withdrawals_awaiting
from accounts.services import (
    adjustment_approve,
    adjustment_propose,
    adjustment_reject,
    audit_record,
    deposit_assign,
    deposit_reject,
    deposit_release,
    user_logins_end,
    user_restrict,
    user_unrestrict,
    withdrawal_approve,
    withdrawal_reject,
)
from core.admin_tools import (
    AmountFormField,
    AmountsMixin,
    ChangeHistoryMixin,
    ReadOnlyAdmin,
    ReadOnlyInline,
    ReasonForm,
    confirm_action,
    form_page,
    run_service_action,
)


class AwaitingMeFilter(admin.SimpleListFilter):
    """What the signed-in operator can decide now (the dashboard's "Waiting for you" links here)."""

    title = "waiting for"
    parameter_name = "awaiting"
    selector = None

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("me", "me")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() != "me":
            return queryset
        return queryset.filter(pk__in=type(self).selector(user=request.user).values("pk"))


def awaiting_filter(selector: Callable[..., QuerySet]) -> type[AwaitingMeFilter]:
    return type(f"{selector.__name__}_filter", (AwaitingMeFilter,), {"selector": staticmethod(selector)})


class AccountInline(ReadOnlyInline):
    model = Account
    fields = ["asset", "kind", "balance", "updated_at"]
    readonly_fields = fields
    ordering = ["asset", "kind"]


class RestrictionForm(ReasonForm):
    kind = forms.ChoiceField(choices=UserRestriction.Kind.choices, widget=forms.RadioSelect)
    field_order = ["kind", "reason"]


class UserRestrictionActions:
    """Restricting a user's trading or withdrawals, and lifting it, from the users list."""

    @admin.action(description="Restrict trading or withdrawals of the selected users", permissions=["restrict_user"])
    def restrict(self, request: HttpRequest, queryset: QuerySet[User]) -> TemplateResponse | None:
        return confirm_action(
            self,
            request,
            queryset,
            title="Restrict the selected users",
            form_class=RestrictionForm,
            service=lambda user, data: user_restrict(
                user=user, kind=data["kind"], reason=data["reason"], acting_user=request.user
            ),
            done="users restricted",
        )

    @admin.action(description="Lift a restriction of the selected users", permissions=["restrict_user"])
    def unrestrict(self, request: HttpRequest, queryset: QuerySet[User]) -> TemplateResponse | None:
        return confirm_action(
            self,
            request,
            queryset,
            title="Lift the restriction of the selected users",
            form_class=RestrictionForm,
            service=lambda user, data: user_unrestrict(
                user=user, kind=data["kind"], reason=data["reason"], acting_user=request.user
            ),
            done="restrictions lifted",
        )

    def has_restrict_user_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.restrict_user")


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
class UserAdmin(UserRestrictionActions, ChangeHistoryMixin, DjangoUserAdmin):
    list_display = [
        "username",
        "email",
        "is_staff",
        "is_active",
        "trading_restricted",
        "withdrawals_restricted",
        "date_joined",
        "last_login",
    ]
    list_filter = ["is_staff", "is_superuser", "is_active", "trading_restricted", "withdrawals_restricted", "groups"]
    search_fields = ["username", "email", "=id"]
    inlines = [AccountInline]
    show_full_result_count = False
    actions = ["restrict", "unrestrict"]
    readonly_fields = ["trading_restricted", "withdrawals_restricted"]

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
        if change and "is_active" in details and not form.instance.is_active:
            # A deactivated user's tokens stop at once: authentication reads no user row.
            user_logins_end(user=form.instance, reason=Login.EndReason.DEACTIVATED)
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


class AssetForm(forms.ModelForm):
    class Meta:
        model = Asset
        fields = ["address_regex"]  # the admin's fieldsets decide the rest

    def clean_address_regex(self) -> str:
        pattern = self.cleaned_data["address_regex"]
        try:
            re.compile(pattern)
        except re.error as exc:
            raise forms.ValidationError(f"Not a regular expression: {exc}") from exc
        return pattern


@admin.register(Asset)
class AssetAdmin(ChangeHistoryMixin, AmountsMixin, admin.ModelAdmin):
    form = AssetForm
    list_display = [
        "symbol",
        "name",
        "decimals",
        "deposit_confirmations",
        "deposit_review_threshold",
        "withdrawals_enabled",
        "withdrawal_min",
        "withdrawal_fee",
        "withdrawal_daily_limit",
        "withdrawal_four_eyes_threshold",
    ]
    search_fields = ["symbol", "name"]
    fieldsets = [
        (None, {"fields": ["symbol", "name", "decimals", "created_at"]}),
        ("Deposits", {"fields": ["deposit_confirmations", "deposit_review_threshold"]}),
        (
            "Withdrawals",
            {
                "fields": [
                    "withdrawals_enabled",
                    "withdrawal_min",
                    "withdrawal_fee",
                    "withdrawal_daily_limit",
                    "withdrawal_four_eyes_threshold",
                    "address_regex",
                ]
            },
        ),
    ]
    readonly_fields = ["created_at"]
    # Changing an asset's precision under existing balances would reinterpret them.
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
class LedgerLineAdmin(CsvExportMixin, ReadOnlyAdmin):
    export_date_field = "entry__created_at"
    export_fields = [
        "id",
        "entry_id",
        "entry__kind",
        "entry__reference",
        "entry__created_at",
        "account_id",
        "account__user__username",
        "account__kind",
        "asset_id",
        "amount",
    ]
    list_display = ["id", "entry", "account", "asset", "amount"]
    list_filter = ["asset", "account__kind"]
    search_fields = ["entry__reference", "account__user__username", "=entry__id"]
    list_select_related = ["entry", "account__user", "account__asset", "asset"]
    raw_id_fields = ["entry", "account"]


@admin.register(DepositAddress)
class DepositAddressAdmin(ReadOnlyAdmin):
    list_display = ["address", "asset", "user", "created_at"]
    list_filter = ["asset"]
    search_fields = ["=address", "user__username"]
    list_select_related = ["user", "asset"]


class AssignForm(ReasonForm):
    username = forms.CharField(max_length=150, help_text="The user the deposit belongs to.")
    field_order = ["username", "reason"]

    def clean_username(self) -> User:
        user = User.objects.filter(username=self.cleaned_data["username"]).first()
        if user is None:
            raise forms.ValidationError("No such user.")
        return user


@admin.register(Deposit)
class DepositAdmin(CsvExportMixin, ReadOnlyAdmin):
    export_fields = [
        "id",
        "user__username",
        "asset_id",
        "amount",
        "declared_amount",
        "status",
        "tx_id",
        "declared_tx_id",
        "address",
        "confirmations",
        "created_at",
        "confirmed_at",
        "credited_at",
        "assigned_by__username",
        "decided_by__username",
        "reason",
    ]
    list_display = [
        "id",
        "user",
        "asset",
        "amount",
        "status",
        "confirmations",
        "tx_id",
        "address",
        "created_at",
        "credited_at",
        "assigned_by",
        "decided_by",
    ]
    list_filter = [awaiting_filter(deposits_awaiting), "status", "asset", "created_at"]
    search_fields = ["user__username", "=tx_id", "=declared_tx_id", "=address", "=id"]
    list_select_related = ["user", "asset", "assigned_by", "decided_by"]
    raw_id_fields = ["user", "assigned_by", "decided_by"]
    date_hierarchy = "created_at"
    actions = ["release", "reject", "assign"]

    @admin.action(description="Release and credit the selected held deposits", permissions=["release_deposit"])
    def release(self, request: HttpRequest, queryset: QuerySet[Deposit]) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda d: deposit_release(deposit_id=d.pk, acting_user=request.user),
            "deposits released and credited",
        )

    @admin.action(description="Reject the selected deposits", permissions=["release_deposit"])
    def reject(self, request: HttpRequest, queryset: QuerySet[Deposit]) -> TemplateResponse | None:
        return confirm_action(
            self,
            request,
            queryset,
            title="Reject the selected deposits",
            service=lambda d, data: deposit_reject(deposit_id=d.pk, reason=data["reason"], acting_user=request.user),
            done="deposits rejected",
        )

    @admin.action(description="Assign the selected unmatched deposits to a user", permissions=["release_deposit"])
    def assign(self, request: HttpRequest, queryset: QuerySet[Deposit]) -> TemplateResponse | None:
        return confirm_action(
            self,
            request,
            queryset,
            title="Assign the selected unmatched deposits",
            form_class=AssignForm,
            service=lambda d, data: deposit_assign(
                deposit_id=d.pk, user=data["username"], reason=data["reason"], acting_user=request.user
            ),
            done="deposits assigned (held until another operator releases them)",
        )


@admin.register(Withdrawal)
class WithdrawalAdmin(CsvExportMixin, ReadOnlyAdmin):
    export_fields = [
        "id",
        "user__username",
        "asset_id",
        "amount",
        "fee",
        "address",
        "status",
        "needs_second_approval",
        "created_at",
        "approved_by__username",
        "approved_at",
        "second_approved_by__username",
        "second_approved_at",
        "sent_at",
        "completed_at",
        "tx_id",
        "rejected_by__username",
        "reason",
    ]
    list_display = [
        "id",
        "user",
        "asset",
        "amount",
        "fee",
        "address",
        "status",
        "needs_second_approval",
        "approved_by",
        "second_approved_by",
        "tx_id",
        "created_at",
    ]
    list_filter = [awaiting_filter(withdrawals_awaiting), "status", "needs_second_approval", "asset", "created_at"]
    search_fields = ["user__username", "=address", "=tx_id", "=id"]
    list_select_related = ["user", "asset", "approved_by", "second_approved_by"]
    raw_id_fields = ["user", "approved_by", "second_approved_by", "rejected_by"]
    date_hierarchy = "created_at"
    actions = ["approve", "reject"]

    @admin.action(
        description="Approve the selected withdrawals (first or second approval)", permissions=["approve_withdrawal"]
    )
    def approve(self, request: HttpRequest, queryset: QuerySet[Withdrawal]) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda w: withdrawal_approve(withdrawal_id=w.pk, acting_user=request.user),
            "withdrawals approved",
        )

    @admin.action(description="Reject the selected withdrawals (funds return)", permissions=["approve_withdrawal"])
    def reject(self, request: HttpRequest, queryset: QuerySet[Withdrawal]) -> TemplateResponse | None:
        return confirm_action(
            self,
            request,
            queryset,
            title="Reject the selected withdrawals",
            service=lambda w, data: withdrawal_reject(
                withdrawal_id=w.pk, reason=data["reason"], acting_user=request.user
            ),
            done="withdrawals rejected",
        )


class ProposeAdjustmentForm(forms.Form):
    username = forms.CharField(max_length=150, help_text="Whose available balance changes.")
    asset = forms.ModelChoiceField(queryset=Asset.objects.order_by("symbol"))
    amount = AmountFormField(
        signed=True,
        max_digits=38,
        decimal_places=18,
        help_text="Added to the available balance; negative takes away.",
    )
    category = forms.ChoiceField(choices=BalanceAdjustment.Category.choices)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)

    def clean_username(self) -> User:
        user = User.objects.filter(username=self.cleaned_data["username"]).first()
        if user is None:
            raise forms.ValidationError("No such user.")
        return user

    def clean_amount(self) -> Decimal:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError("An adjustment of zero changes nothing.")
        return amount


class ApproveAdjustmentForm(forms.Form):
    note = forms.CharField(
        required=False,
        max_length=255,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Optional; kept with the decision.",
    )


@admin.register(BalanceAdjustment)
class BalanceAdjustmentAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "user",
        "asset",
        "amount",
        "category",
        "status",
        "proposed_by",
        "proposed_at",
        "decided_by",
        "decided_at",
    ]
    list_filter = [awaiting_filter(adjustments_awaiting), "status", "category", "asset", "proposed_at"]
    search_fields = ["user__username", "=id", "reason"]
    list_select_related = ["user", "asset", "proposed_by", "decided_by"]
    raw_id_fields = ["user", "proposed_by", "decided_by", "ledger_entry"]
    date_hierarchy = "proposed_at"
    actions = ["approve", "reject"]
    change_list_template = "admin/accounts/balanceadjustment/change_list.html"

    def get_urls(self) -> list:
        propose = self.admin_site.admin_view(self.propose_view)
        return [path("propose/", propose, name="accounts_balanceadjustment_propose"), *super().get_urls()]

    def propose_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("accounts.propose_adjustment"):
            raise PermissionDenied

        def propose(data: dict) -> str:
            adjustment = adjustment_propose(
                user=data["username"],
                asset=data["asset"],
                amount=data["amount"],
                category=data["category"],
                reason=data["reason"],
                acting_user=request.user,
            )
            return f"{adjustment} proposed; another operator must approve it before it applies."

        initial = {"username": request.GET.get("username", "")}
        form = ProposeAdjustmentForm(request.POST if request.method == "POST" else None, initial=initial)
        return form_page(
            self,
            request,
            title="Propose a balance adjustment",
            form=form,
            service=propose,
            intro="Nothing moves until a second operator approves the proposal.",
        )

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        can_propose = request.user.has_perm("accounts.propose_adjustment")
        return super().changelist_view(request, {"can_propose": can_propose, **(extra_context or {})})

    @admin.action(description="Approve and apply the selected adjustments", permissions=["approve_adjustment"])
    def approve(self, request: HttpRequest, queryset: QuerySet[BalanceAdjustment]) -> TemplateResponse | None:
        return confirm_action(
            self,
            request,
            queryset,
            title="Approve and apply the selected adjustments",
            form_class=ApproveAdjustmentForm,
            service=lambda a, data: adjustment_approve(adjustment_id=a.pk, note=data["note"], acting_user=request.user),
            done="adjustments approved and applied",
        )

    @admin.action(description="Reject the selected adjustments", permissions=["approve_adjustment"])
    def reject(self, request: HttpRequest, queryset: QuerySet[BalanceAdjustment]) -> TemplateResponse | None:
        return confirm_action(
            self,
            request,
            queryset,
            title="Reject the selected adjustments",
            service=lambda a, data: adjustment_reject(
                adjustment_id=a.pk, reason=data["reason"], acting_user=request.user
            ),
            done="adjustments rejected",
        )


@admin.register(UserRestriction)
class UserRestrictionAdmin(ChangeHistoryMixin, ReadOnlyAdmin):
    list_display = ["user", "kind", "reason", "created_by", "created_at", "lifted_by", "lifted_at"]
    list_filter = ["kind", ("lifted_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["user__username", "=user__id"]
    list_select_related = ["user", "created_by", "lifted_by"]


@admin.register(AuditLog)
class AuditLogAdmin(CsvExportMixin, ReadOnlyAdmin):
    export_fields = ["id", "created_at", "actor__username", "action", "target", "details"]
    list_display = ["created_at", "actor", "action", "target", "details"]
    list_filter = ["action", "created_at"]
    search_fields = ["target", "actor__username"]
    list_select_related = ["actor"]
    date_hierarchy = "created_at"
