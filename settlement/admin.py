from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest

from accounts.exports import CsvExportMixin
from core.admin_tools import ReadOnlyAdmin, run_service_action
from settlement.models import (
    Alert,
    ChainCheckpoint,
    ConsumerOffset,
    EngineEvent,
    ReconciliationRun,
    SettlementCursor,
    Trade,
)
from settlement.services import alert_resolve


@admin.register(Trade)
class TradeAdmin(CsvExportMixin, ReadOnlyAdmin):
    export_date_field = "executed_at"
    export_fields = [
        "id",
        "market_id",
        "seq",
        "executed_at",
        "price",
        "quantity",
        "quote_amount",
        "taker_side",
        "buy_order_id",
        "sell_order_id",
        "buyer__username",
        "seller__username",
        "buyer_fee",
        "seller_fee",
    ]
    list_display = [
        "id",
        "market",
        "seq",
        "price",
        "quantity",
        "quote_amount",
        "taker_side",
        "buyer",
        "seller",
        "buyer_fee",
        "seller_fee",
        "executed_at",
    ]
    list_filter = ["market", "taker_side", "executed_at"]
    search_fields = ["=seq", "buyer__username", "seller__username", "=buy_order__id", "=sell_order__id"]
    list_select_related = ["market", "buyer", "seller"]
    raw_id_fields = ["buy_order", "sell_order", "buyer", "seller"]
    date_hierarchy = "executed_at"


@admin.register(EngineEvent)
class EngineEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "market", "seq", "type", "hash", "received_at", "settled_at"]
    list_filter = ["market", "type", ("settled_at", admin.EmptyFieldListFilter)]
    search_fields = ["=seq", "hash"]


@admin.register(SettlementCursor)
class SettlementCursorAdmin(ReadOnlyAdmin):
    list_display = ["market", "seq", "received_seq", "backlog", "status", "hash", "updated_at"]
    list_filter = ["status"]


@admin.register(ChainCheckpoint)
class ChainCheckpointAdmin(ReadOnlyAdmin):
    """How far each market's hash chain is verified, and how many received events the next
    reconciliation run still has to verify after it."""

    list_display = ["market", "seq", "hash", "verified_at", "unverified"]
    ordering = ["market"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChainCheckpoint]:
        received = SettlementCursor.objects.filter(market=OuterRef("market")).values("received_seq")
        return super().get_queryset(request).annotate(received_seq=Subquery(received))

    @admin.display(description="received since")
    def unverified(self, checkpoint: ChainCheckpoint) -> int:
        return max((checkpoint.received_seq or 0) - checkpoint.seq, 0)


@admin.register(ConsumerOffset)
class ConsumerOffsetAdmin(ReadOnlyAdmin):
    list_display = ["topic", "partition", "offset", "updated_at"]


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "market", "message", "resolved_at", "resolved_by"]
    list_filter = ["kind", "market", ("resolved_at", admin.EmptyFieldListFilter)]
    search_fields = ["message", "market"]
    actions = ["resolve"]

    @admin.action(description="Mark the selected alerts resolved", permissions=["resolve_alert"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        run_service_action(
            self, request, queryset, lambda a: alert_resolve(alert_id=a.pk, acting_user=request.user), "alerts resolved"
        )


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "ok", "full", "failed_checks", "duration_ms"]
    list_filter = ["ok", "full", "created_at"]
    date_hierarchy = "created_at"

    @admin.display(description="failed checks")
    def failed_checks(self, run: ReconciliationRun) -> str:
        return "; ".join(f"{c['check']} ({c['count']})" for c in run.checks if not c["ok"]) or "-"
