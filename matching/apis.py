from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import (
    AmountField,
    CaseInsensitiveChoiceField,
    ErrorDetailSerializer,
    ErrorSerializer,
    LimitSerializer,
    QuerySerializer,
    ReusedSerializer,
    StrictBooleanField,
    StrictCharField,
    StrictRegexField,
    StrictSerializer,
)
from core.errors import NotFound, error_body
from core.throttling import AnonRateThrottle, BacklogThrottle, ScopedRateThrottle, UserRateThrottle
from matching.models import Market, Order
from matching.selectors import market_depth, market_get, orders_for_user
from matching.services import OrderRequest, order_cancel, order_place, orders_cancel_all, orders_place


class MarketsApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    class OutputSerializer(serializers.ModelSerializer):
        base = serializers.CharField(source="base_id")
        quote = serializers.CharField(source="quote_id")
        tick_size = AmountField()
        lot_size = AmountField()
        min_notional = AmountField()
        maker_fee = AmountField()
        taker_fee = AmountField()

        class Meta:
            model = Market
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
            ]

    @extend_schema(responses={200: OutputSerializer(many=True)}, auth=[])
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(Market.objects.order_by("symbol"), many=True).data)


class MarketDepthApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    class OutputSerializer(serializers.Serializer):
        symbol = serializers.CharField()
        sequence = serializers.IntegerField(allow_null=True, help_text="Engine sequence the book reflects.")
        bids = serializers.ListField(
            child=serializers.ListField(child=AmountField(), min_length=2, max_length=2),
            help_text="[price, quantity] levels, best first.",
        )
        asks = serializers.ListField(
            child=serializers.ListField(child=AmountField(), min_length=2, max_length=2),
            help_text="[price, quantity] levels, best first.",
        )

    @extend_schema(parameters=[LimitSerializer], responses={200: OutputSerializer}, auth=[])
    def get(self, request: Request, symbol: str) -> Response:
        query = LimitSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(market_depth(market=market_get(symbol=symbol), limit=query.validated_data["limit"]))


class OrderOutputSerializer(serializers.ModelSerializer):
    symbol = serializers.CharField(source="market_id")
    side = CaseInsensitiveChoiceField(choices=Order.Side.choices)
    order_type = CaseInsensitiveChoiceField(choices=Order.Type.choices)
    price = AmountField(allow_null=True)
    quantity = AmountField(allow_null=True)
    quote_quantity = AmountField(allow_null=True)
    filled = AmountField()
    filled_quote = AmountField()
    fee = AmountField()
    locked = AmountField()

    class Meta:
        model = Order
        fields = [
            "id",
            "cid",
            "symbol",
            "side",
            "order_type",
            "time_in_force",
            "post_only",
            "stp",
            "price",
            "quantity",
            "quote_quantity",
            "filled",
            "filled_quote",
            "fee",
            "locked",
            "status",
            "reason",
            "cancel_requested_at",
            "created_at",
            "updated_at",
        ]


CID_RULE = "cid must be 16 to 32 characters of A-Z, a-z, 0-9, _ and -."


class OrdersApi(APIView):
    throttle_classes = [AnonRateThrottle, UserRateThrottle, ScopedRateThrottle, BacklogThrottle]

    @property
    def throttle_scope(self) -> str | None:
        return "orders" if self.request.method == "POST" else None

    class InputSerializer(StrictSerializer):
        cid = StrictRegexField(
            r"^[A-Za-z0-9_-]+$",
            min_length=16,
            max_length=32,
            error_messages={key: CID_RULE for key in ("invalid", "min_length", "max_length")},
        )
        # Not trimmed: " " is a symbol no market has (400 `unknown_symbol`), as the schema allows it.
        symbol = StrictCharField(max_length=32, trim_whitespace=False)
        side = CaseInsensitiveChoiceField(choices=Order.Side.choices)
        order_type = CaseInsensitiveChoiceField(choices=Order.Type.choices)
        price = AmountField(required=False, allow_null=True)
        quantity = AmountField(required=False, allow_null=True)
        quote_quantity = AmountField(required=False, allow_null=True)
        time_in_force = CaseInsensitiveChoiceField(choices=Order.TimeInForce.choices, default=Order.TimeInForce.GTC)
        post_only = StrictBooleanField(default=False)
        stp = CaseInsensitiveChoiceField(choices=Order.SelfTrade.choices, default=Order.SelfTrade.CANCEL_INCOMING)

    class FilterSerializer(LimitSerializer):
        status = serializers.ChoiceField(choices=Order.Status.choices, required=False)
        symbol = serializers.CharField(max_length=32, required=False)

    @extend_schema(parameters=[FilterSerializer], responses={200: OrderOutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        orders = orders_for_user(user=request.user, **query.validated_data)
        return Response(OrderOutputSerializer(orders, many=True).data)

    class CancelAllSerializer(QuerySerializer):
        symbol = serializers.CharField(max_length=32)

    class CancelAllOutputSerializer(serializers.Serializer):
        count = serializers.IntegerField(help_text="Live orders the engine was asked to cancel.")

    @extend_schema(
        parameters=[CancelAllSerializer],
        responses={202: CancelAllOutputSerializer, 404: ErrorSerializer},
        operation_id="orders_cancel_all",
    )
    def delete(self, request: Request) -> Response:
        query = self.CancelAllSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        count = orders_cancel_all(user=request.user, market=market_get(symbol=query.validated_data["symbol"]).symbol)
        return Response({"count": count}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=InputSerializer,
        responses={201: OrderOutputSerializer, 200: OrderOutputSerializer, 403: ErrorSerializer, 503: ErrorSerializer},
        description="Place an order. The same `cid` again answers 200 with the first order instead of a second one.",
    )
    def post(self, request: Request) -> Response:
        order, created = order_place(user=request.user, **ORDER_READER.read(request.data))
        return Response(ORDER_WRITER.write(order), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


# The order's input and output serializers, one instance of each per thread (`ReusedSerializer`).
ORDER_READER = ReusedSerializer(OrdersApi.InputSerializer)
ORDER_WRITER = ReusedSerializer(OrderOutputSerializer)
BATCH_LIMIT = 100


class OrdersBatchApi(APIView):
    """Many orders in one request: each is checked, locked and placed, or refused, on its own, in the
    order given, and the answer holds one result per order at the same position."""

    throttle_classes = [AnonRateThrottle, UserRateThrottle, ScopedRateThrottle, BacklogThrottle]
    throttle_scope = "orders"

    class InputSerializer(StrictSerializer):
        # Each item is read by the order's own serializer (below), which names what is wrong with it.
        orders = serializers.ListField(
            child=serializers.JSONField(allow_null=True),
            min_length=1,
            max_length=BATCH_LIMIT,
            help_text="The orders, in order.",
        )

    class SchemaInputSerializer(StrictSerializer):
        """What the schema shows: each item is an order as `POST /api/orders/` takes it."""

        orders = serializers.ListField(
            child=OrdersApi.InputSerializer(), min_length=1, max_length=BATCH_LIMIT, help_text="The orders, in order."
        )

    class ResultSerializer(serializers.Serializer):
        status = serializers.IntegerField(
            help_text="What `POST /api/orders/` would have answered: 201 placed, 200 the cid's earlier order, "
            "4xx refused (nothing changed for this order)."
        )
        order = OrderOutputSerializer(allow_null=True)
        error = ErrorDetailSerializer(allow_null=True, help_text="Why it was refused, as in every error answer.")

    @extend_schema(
        request=SchemaInputSerializer,
        responses={
            200: inline_serializer("OrdersBatchOutput", {"results": ResultSerializer(many=True)}),
            503: ErrorSerializer,
        },
        operation_id="orders_batch",
        description=f"Place up to {BATCH_LIMIT} orders. Each gets its own result, at its position: the order "
        "(201, or 200 when its `cid` was used before) or the error that refused it (the market's rules, the "
        "funds, the open-order cap). An order the schema refuses refuses the whole batch (400, nothing placed). "
        "A batch counts as one request against the `orders` rate limit.",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        items = data.validated_data["orders"]
        requests: list[OrderRequest] = []
        malformed: dict[str, object] = {}
        for position, item in enumerate(items):
            try:
                requests.append(OrderRequest(**ORDER_READER.read(item)))
            except serializers.ValidationError as exc:
                # Named by path (`orders.1.price`), as the error shape takes one list of messages a field.
                if isinstance(exc.detail, dict):
                    for name, messages in exc.detail.items():
                        malformed[f"orders.{position}.{name}"] = messages
                else:
                    malformed[f"orders.{position}"] = exc.detail
        if malformed:
            # What the schema refuses refuses the whole batch, as it would a single order: nothing is
            # placed. The rules it cannot express (the market's steps, the funds) answer per order.
            raise serializers.ValidationError(malformed)
        results: list[dict] = []
        for placement in orders_place(user=request.user, requests=requests):
            error = placement.error
            if error is None:
                shown = ORDER_WRITER.write(placement.order)
                results.append({"status": 201 if placement.created else 200, "order": shown, "error": None})
            else:
                body = error_body(error.code, error.message, error.fields)["error"]
                results.append({"status": error.status_code, "order": None, "error": body})
        return Response({"results": results})


class OrderDetailApi(APIView):
    def _order(self, request: Request, order_id: int) -> Order:
        order = Order.objects.select_related("market").filter(pk=order_id, user=request.user).first()
        if order is None:
            raise NotFound("not_found", "No such order.")
        return order

    @extend_schema(responses={200: OrderOutputSerializer})
    def get(self, request: Request, order_id: int) -> Response:
        return Response(OrderOutputSerializer(self._order(request, order_id)).data)

    @extend_schema(
        responses={202: OrderOutputSerializer, 409: ErrorSerializer},
        operation_id="orders_cancel",
        description="Ask the engine to cancel the order; its status says when it is cancelled.",
    )
    def delete(self, request: Request, order_id: int) -> Response:
        order = order_cancel(user=request.user, order_id=order_id)
        return Response(OrderOutputSerializer(order).data, status=status.HTTP_202_ACCEPTED)
