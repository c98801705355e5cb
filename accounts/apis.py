from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Asset, Deposit, Withdrawal
from accounts.selectors import balances_for_user, deposits_for_user, withdrawals_for_user
from accounts.services import deposit_create, user_register, withdrawal_request
from exchange.api import AmountField
from exchange.errors import InvalidRequest
from exchange.throttling import ScopedRateThrottle


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    class InputSerializer(serializers.Serializer):
        username = serializers.RegexField(r"^[\w.@+-]{3,150}$", max_length=150)
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)
        email = serializers.EmailField()

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, auth=[])
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_register(**data.validated_data)
        return Response(self.OutputSerializer(user).data, status=status.HTTP_201_CREATED)


class LogoutApi(APIView):
    class InputSerializer(serializers.Serializer):
        refresh = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={205: None})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            token = RefreshToken(data.validated_data["refresh"])
        except TokenError as exc:
            raise InvalidRequest("token_not_valid", str(exc), field="refresh") from exc
        if str(token.get("user_id")) != str(request.user.pk):
            raise InvalidRequest("token_not_valid", "That refresh token belongs to someone else.", field="refresh")
        token.blacklist()
        return Response(status=status.HTTP_205_RESET_CONTENT)


class BalancesApi(APIView):
    class OutputSerializer(serializers.Serializer):
        asset = serializers.CharField()
        available = AmountField()
        locked = AmountField()

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(balances_for_user(user=request.user), many=True).data)


def _asset(symbol: str) -> Asset:
    asset = Asset.objects.filter(pk=symbol).first()
    if asset is None:
        raise InvalidRequest("unknown_asset", f"No asset {symbol!r}.", field="asset")
    return asset


class DepositsApi(APIView):
    class InputSerializer(serializers.Serializer):
        asset = serializers.CharField(max_length=16)
        amount = AmountField()
        tx_id = serializers.RegexField(r"^[\x21-\x7e]{1,128}$", required=False, allow_null=True)

    class OutputSerializer(serializers.ModelSerializer):
        amount = AmountField()

        class Meta:
            model = Deposit
            fields = ["id", "asset", "amount", "tx_id", "status", "created_at", "credited_at"]

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(deposits_for_user(user=request.user), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer, 200: OutputSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        deposit, created = deposit_create(
            user=request.user,
            asset=_asset(data.validated_data["asset"]),
            amount=data.validated_data["amount"],
            tx_id=data.validated_data.get("tx_id"),
        )
        return Response(
            self.OutputSerializer(deposit).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class WithdrawalsApi(APIView):
    class InputSerializer(serializers.Serializer):
        asset = serializers.CharField(max_length=16)
        amount = AmountField()
        address = serializers.RegexField(r"^[\x21-\x7e]{1,128}$")

    class OutputSerializer(serializers.ModelSerializer):
        amount = AmountField()

        class Meta:
            model = Withdrawal
            fields = ["id", "asset", "amount", "address", "status", "created_at", "reviewed_at"]

    @extend_schema(responses={200: OutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(withdrawals_for_user(user=request.user), many=True).data)

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        withdrawal = withdrawal_request(
            user=request.user,
            asset=_asset(data.validated_data["asset"]),
            amount=data.validated_data["amount"],
            address=data.validated_data["address"],
        )
        return Response(self.OutputSerializer(withdrawal).data, status=status.HTTP_201_CREATED)
