from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.services import audit_record
from exchange.admin_tools import AmountsMixin, LargeTablePaginator, ReadOnlyAdmin, run_service_action
from matching.models import EngineSnapshot, Market, Order, OutboxMessage
from matching.services import market_create, market_halt, market_resume, order_cancel


@admin.register(Market)
class MarketAdmin(AmountsMixin, admin.ModelAdmin):
    list_display = [
        "symbol",
        "base",
        "quote",
        "tick_size",
        "lot_size",
        "min_notional",
        "maker_fee",
        "taker_fee",
        "status",
    ]
    list_filter = ["status", "quote"]
    search_fields = ["symbol"]
    actions = ["halt", "resume"]

    # The engine counts in ticks and lots of these sizes: they are fixed once the market exists.
    # Halting and resuming go through the actions, which also tell the engine.
    fields = [
        "symbol",
        "base",
        "quote",
        "tick_size",
        "lot_size",
        "min_notional",
        "maker_fee",
        "taker_fee",
        "status",
        "created_at",
    ]
    readonly_fields = ["status", "created_at"]
    change_readonly_fields = ["symbol", "base", "quote", "tick_size", "lot_size"]

    def save_model(self, request: HttpRequest, obj: Market, form: object, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            audit_record(
                actor=request.user,
                action="market_update",
                target=f"market:{obj.pk}",
                **{name: str(form.cleaned_data[name]) for name in form.changed_data},
            )
            return
        market_create(
            symbol=obj.symbol,
            base=obj.base,
            quote=obj.quote,
            tick_size=obj.tick_size,
            lot_size=obj.lot_size,
            min_notional=obj.min_notional,
            maker_fee=obj.maker_fee,
            taker_fee=obj.taker_fee,
            acting_user=request.user,
        )

    def has_delete_permission(self, request: HttpRequest, obj: Market | None = None) -> bool:
        return False

    @admin.action(description="Halt the selected markets", permissions=["change"])
    def halt(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        run_service_action(
            self, request, queryset, lambda m: market_halt(symbol=m.pk, acting_user=request.user), "markets halted"
        )

    @admin.action(description="Resume the selected markets", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        run_service_action(
            self, request, queryset, lambda m: market_resume(symbol=m.pk, acting_user=request.user), "markets resumed"
        )


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "user",
        "market",
        "cid",
        "side",
        "order_type",
        "price",
        "quantity",
        "filled",
        "locked",
        "status",
        "created_at",
    ]
    list_filter = ["status", "market", "side", "order_type", "time_in_force", "created_at"]
    search_fields = ["=id", "cid", "user__username"]
    list_select_related = ["user", "market"]
    raw_id_fields = ["user"]
    date_hierarchy = "created_at"
    actions = ["cancel"]
    paginator = LargeTablePaginator

    @admin.action(description="Cancel the selected orders (through the engine)", permissions=["approve"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda o: order_cancel(user=o.user, order_id=o.pk, acting_user=request.user),
            "cancels requested",
        )


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "topic", "key", "created_at", "published_at", "attempts", "last_error"]
    list_filter = ["topic", ("published_at", admin.EmptyFieldListFilter)]
    search_fields = ["key", "=id"]
    exclude = ["payload"]
    readonly_fields = ["payload_text"]

    @admin.display(description="payload")
    def payload_text(self, obj: OutboxMessage) -> str:
        return bytes(obj.payload).decode(errors="replace")


@admin.register(EngineSnapshot)
class EngineSnapshotAdmin(ReadOnlyAdmin):
    list_display = ["id", "worker", "commands", "offsets", "size", "created_at"]
    list_filter = ["worker"]
    exclude = ["data"]

    @admin.display(description="bytes")
    def size(self, obj: EngineSnapshot) -> int:
        return len(obj.data)
