from functools import reduce
from operator import or_

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.text import smart_split, unescape_string_literal

from accounts.models import User
from accounts.services import audit_record
from core.admin_tools import (
    AmountsMixin,
    ChangeHistoryMixin,
    LargeTablePaginator,
    ReadOnlyAdmin,
    ReasonForm,
    confirm_action,
    form_page,
    run_service_action,
)
from matching.models import EngineSnapshot, Market, Order, OutboxMessage
from matching.services import market_create, market_halt, market_resume, order_cancel, orders_cancel_all


@admin.register(Market)
class MarketAdmin(ChangeHistoryMixin, AmountsMixin, admin.ModelAdmin):
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
    actions = ["halt", "resume", "cancel_all"]

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

    @admin.action(description="Halt the selected markets", permissions=["halt_market"])
    def halt(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        run_service_action(
            self, request, queryset, lambda m: market_halt(symbol=m.pk, acting_user=request.user), "markets halted"
        )

    @admin.action(description="Resume the selected markets", permissions=["halt_market"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Market]) -> None:
        run_service_action(
            self, request, queryset, lambda m: market_resume(symbol=m.pk, acting_user=request.user), "markets resumed"
        )

    @admin.action(description="Cancel every open order in the selected markets", permissions=["halt_market"])
    def cancel_all(self, request: HttpRequest, queryset: QuerySet[Market]) -> TemplateResponse | None:
        return confirm_action(
            self,
            request,
            queryset,
            title="Cancel every open order in the selected markets",
            service=lambda m, data: orders_cancel_all(market=m.pk, reason=data["reason"], acting_user=request.user),
            done="markets' orders sent to the engine to cancel",
        )


class CancelAllForm(ReasonForm):
    username = forms.CharField(max_length=150, required=False, help_text="Empty: every user of the market.")
    market = forms.ModelChoiceField(
        queryset=Market.objects.order_by("symbol"), required=False, empty_label="every market"
    )
    field_order = ["username", "market", "reason"]

    def clean_username(self) -> User | None:
        username = self.cleaned_data["username"]
        if not username:
            return None
        user = User.objects.filter(username=username).first()
        if user is None:
            raise forms.ValidationError("No such user.")
        return user

    def clean(self) -> dict:
        data = super().clean()
        if not data.get("username") and not data.get("market") and not self.errors:
            raise forms.ValidationError("Name a user, a market, or both.")
        if data.get("market"):
            data["market"] = data["market"].pk
        return data


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
    # What get_search_results below looks each word up in.
    search_fields = ["id", "cid", "user__username"]
    search_help_text = "An order id, a cid or a username, whole and exactly as written."
    list_select_related = ["user", "market"]
    raw_id_fields = ["user"]
    date_hierarchy = "created_at"
    actions = ["cancel"]
    change_list_template = "admin/matching/order/change_list.html"
    paginator = LargeTablePaginator

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Order], search_term: str
    ) -> tuple[QuerySet[Order], bool]:
        """Each word is an order id, a cid or a username, matched whole.

        Django's own search compared the id as text and looked for the word inside every cid and
        username: a read of the whole table, four times per page (the count, the page, and the date
        hierarchy's range and dates). Here the words are first looked up as usernames and as cids,
        one index lookup each, and the list is then filtered only on what they found, by id or by
        user, so that PostgreSQL plans with the actual user's statistics and counts from an index.
        cids and usernames are case-sensitive (alice and Alice are two traders): they are matched
        as written.
        """
        words = [
            unescape_string_literal(w) if len(w) > 1 and w[0] in "\"'" and w[0] == w[-1] else w
            for w in smart_split(search_term)
        ]
        if not words:
            return queryset, False
        users = dict(User.objects.filter(username__in=words).values_list("username", "pk"))
        by_cid: dict[str, list[int]] = {}
        for cid, pk in Order.objects.filter(cid__in=words).values_list("cid", "pk"):
            by_cid.setdefault(cid, []).append(pk)
        for word in words:
            ids = list(by_cid.get(word, ()))
            if word.isascii() and word.isdigit() and int(word) < 2**63:
                ids.append(int(word))
            branches = [Q(pk__in=ids)] if ids else []
            if word in users:
                branches.append(Q(user_id=users[word]))
            if not branches:
                return queryset.none(), False
            queryset = queryset.filter(reduce(or_, branches))
        return queryset, False

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.cancel_all_view)
        return [path("cancel-all/", view, name="matching_order_cancel_all"), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        can_cancel = request.user.has_perm("matching.cancel_order")
        return super().changelist_view(request, {"can_cancel_all": can_cancel, **(extra_context or {})})

    def cancel_all_view(self, request: HttpRequest) -> HttpResponse:
        """Cancel all orders of a user, of a market, or of a user in a market."""
        if not request.user.has_perm("matching.cancel_order"):
            raise PermissionDenied

        def cancel(data: dict) -> str:
            count = orders_cancel_all(
                user=data["username"], market=data["market"], reason=data["reason"], acting_user=request.user
            )
            return f"{count} open orders sent to the engine to cancel."

        initial = {"username": request.GET.get("username", ""), "market": request.GET.get("market")}
        form = CancelAllForm(request.POST if request.method == "POST" else None, initial=initial)
        return form_page(
            self,
            request,
            title="Cancel open orders",
            form=form,
            service=cancel,
            intro="Every live order of the user (in one market, or in all), or of everyone in one market, is "
            "cancelled through the engine; the funds they hold return when settlement applies the cancels.",
        )

    @admin.action(description="Cancel the selected orders (through the engine)", permissions=["cancel_order"])
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
