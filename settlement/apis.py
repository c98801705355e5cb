from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import AmountField, CaseInsensitiveChoiceField, LimitSerializer
from matching.models import Order
from matching.selectors import market_get
from settlement.selectors import fills_for_user, trades_public


class FillsApi(APIView):
    class FilterSerializer(LimitSerializer):
        symbol = serializers.CharField(max_length=32, required=False)

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        symbol = serializers.CharField()
        seq = serializers.IntegerField()
        order_id = serializers.IntegerField()
        side = CaseInsensitiveChoiceField(choices=Order.Side.choices)
        role = serializers.ChoiceField(choices=["maker", "taker"])
        price = AmountField()
        quantity = AmountField()
        quote_amount = AmountField()
        fee = AmountField()
        fee_asset = serializers.CharField()
        executed_at = serializers.DateTimeField()

    @extend_schema(parameters=[FilterSerializer], responses={200: OutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        fills = fills_for_user(user=request.user, **query.validated_data)
        return Response(self.OutputSerializer(fills, many=True).data)


class MarketTradesApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    class OutputSerializer(serializers.Serializer):
        seq = serializers.IntegerField()
        price = AmountField()
        quantity = AmountField()
        taker_side = CaseInsensitiveChoiceField(choices=Order.Side.choices)
        executed_at = serializers.DateTimeField()

    @extend_schema(parameters=[LimitSerializer], responses={200: OutputSerializer(many=True)}, auth=[])
    def get(self, request: Request, symbol: str) -> Response:
        query = LimitSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        trades = trades_public(market=market_get(symbol=symbol), limit=query.validated_data["limit"])
        return Response(self.OutputSerializer(trades, many=True).data)
