from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import Account, Asset, AuditLog, Deposit, LedgerEntry, LedgerLine, User, Withdrawal
from accounts.services import deposit_approve, deposit_reject, withdrawal_approve, withdrawal_reject
from exchange.admin_tools import AmountsMixin, ReadOnlyAdmin, ReadOnlyInline, run_service_action


class AccountInline(ReadOnlyInline):
    model = Account
    fields = ["asset", "kind", "balance", "updated_at"]
    readonly_fields = fields
    ordering = ["asset", "kind"]


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "email", "is_staff", "is_active", "date_joined", "last_login"]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["username", "email", "=id"]
    inlines = [AccountInline]
    show_full_result_count = False


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
