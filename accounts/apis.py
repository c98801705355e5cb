import math
import time

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import authenticate, user_logged_in
from django.db.models import Max
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.custody import SIGNATURE_HEADER, SignatureError, signature_verify
from accounts.idempotency import HEADER, idempotent
from accounts.models import Asset, Deposit, User, Withdrawal
from accounts.selectors import (
    balances_for_user,
    deposits_awaiting_custody,
    deposits_for_user,
    withdrawals_for_custody,
    withdrawals_for_user,
)
from accounts.services import (
    deposit_address_get,
    deposit_declare,
    deposit_report,
    login_end,
    login_refresh,
    login_start,
    user_password_change,
    user_register,
    withdrawal_report,
    withdrawal_request,
)
from core.api import AmountField, EmailField, ErrorSerializer, QuerySerializer, StrictSerializer
from core.errors import InvalidRequest, Unauthorized
from core.throttling import ScopedRateThrottle


class RegisterApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    class InputSerializer(StrictSerializer):
        username = serializers.RegexField(r"^[\w.@+-]+$", min_length=3, max_length=150)
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)
        email = EmailField()

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer, 409: ErrorSerializer}, auth=[])
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_register(**data.validated_data)
        return Response(self.OutputSerializer(user).data, status=status.HTTP_201_CREATED)


# --- Sign-in and tokens ---------------------------------------------------------------------------


class LoginLocked(exceptions.Throttled):
    default_code = "login_locked"


def password_check(request: Request, *, username: str, password: str) -> User | None:
    """The user whose password this is, or None; through django-axes, which counts failures per
    username and refuses a locked-out username (429 `login_locked`) without counting the attempt, so
    that attempts made while it is locked do not prolong the lock."""
    credentials = {"username": username}
    if AxesProxyHandler.is_allowed(request, credentials):
        user = authenticate(request, username=username, password=password)
        if not getattr(request, "axes_locked_out", False):
            return user
    last = AccessAttempt.objects.filter(username=username.lower()).aggregate(last=Max("attempt_time"))["last"]
    remaining = (last or timezone.now()) + get_cool_off(request) - timezone.now()
    wait = max(1, math.ceil(remaining.total_seconds()))
    raise LoginLocked(
        wait=wait, detail=f"Too many failed sign-ins for this username; try again in {math.ceil(wait / 60)} minutes."
    )


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


def token_pair(refresh: object, access: object) -> dict[str, str]:
    return TokenPairSerializer({"access": str(access), "refresh": str(refresh)}).data


class TokenApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    class InputSerializer(StrictSerializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)

    @extend_schema(
        request=InputSerializer,
        responses={200: TokenPairSerializer, 401: ErrorSerializer},
        auth=[],
        description="Sign in: a new login and its first tokens. The username is matched whatever its case. Too "
        "many failures for one username lock it for a while (429 `login_locked`, with Retry-After).",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = password_check(request, **data.validated_data)
        if user is None or not user.is_active:
            raise Unauthorized("no_active_account", "No active account found with the given credentials.")
        user_logged_in.send(sender=user.__class__, request=request, user=user)
        return Response(token_pair(*login_start(user=user)))


class TokenRefreshApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes = []

    class InputSerializer(StrictSerializer):
        refresh = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
        responses={200: TokenPairSerializer, 401: ErrorSerializer},
        auth=[],
        description="A new pair of tokens for the refresh token, which stops working. A refresh token used twice "
        "ends its whole login (401 `token_reused`); no login outlives its absolute lifetime.",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(token_pair(*login_refresh(refresh=data.validated_data["refresh"])))


class LogoutApi(APIView):
    class InputSerializer(StrictSerializer):
        refresh = serializers.CharField()

    @extend_schema(
        request=InputSerializer,
        responses={205: None},
        description="End the login of the refresh token; the access token sent with this request stops too.",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        login_end(user=request.user, refresh=data.validated_data["refresh"], access=request.auth)
        return Response(status=status.HTTP_205_RESET_CONTENT)


class PasswordChangeApi(APIView):
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "auth"

    class InputSerializer(StrictSerializer):
        current_password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)
        new_password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)

    @extend_schema(
        request=InputSerializer,
        responses={204: None},
        description="Set a new password. Every login of the user ends, this one included: sign in again.",
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = password_check(
            request, username=request.user.get_username(), password=data.validated_data["current_password"]
        )
        if user is None or user.pk != request.user.pk:
            raise InvalidRequest("wrong_password", "The current password is wrong.", field="current_password")
        user_password_change(user=user, password=data.validated_data["new_password"])
        return Response(status=status.HTTP_204_NO_CONTENT)


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


# Transaction ids and withdrawal addresses: 1 to 128 visible ASCII characters (an asset's own
# address format is checked by the service). The lengths are `max_length`, not a `{1,128}` in the
# pattern, so the schema states them as `maxLength`, which every client and fuzzer reads.
VISIBLE_ASCII = r"^[\x21-\x7e]+$"
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    HEADER,
    location=OpenApiParameter.HEADER,
    required=False,
    type={"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[\x20-\x7e]+$"},
    description="Send the same key again to get the first answer instead of a second request; "
    "the same key with another body is 422.",
)


class DepositAddressApi(APIView):
    class FilterSerializer(QuerySerializer):
        asset = serializers.CharField(max_length=16)

    class OutputSerializer(serializers.Serializer):
        asset = serializers.CharField(source="asset_id")
        address = serializers.CharField()

    @extend_schema(parameters=[FilterSerializer], responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        query = self.FilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        address = deposit_address_get(user=request.user, asset=_asset(query.validated_data["asset"]))
        return Response(self.OutputSerializer(address).data)


class DepositOutputSerializer(serializers.ModelSerializer):
    amount = AmountField()
    tx_id = serializers.SerializerMethodField()

    class Meta:
        model = Deposit
        fields = ["id", "asset", "amount", "tx_id", "status", "confirmations", "created_at", "credited_at"]

    def get_tx_id(self, deposit: Deposit) -> str | None:
        return deposit.tx_id or deposit.declared_tx_id


class DepositsApi(APIView):
    class InputSerializer(StrictSerializer):
        asset = serializers.CharField(max_length=16)
        amount = AmountField()
        tx_id = serializers.RegexField(VISIBLE_ASCII, max_length=128, required=False, allow_null=True)

    @extend_schema(responses={200: DepositOutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(DepositOutputSerializer(deposits_for_user(user=request.user), many=True).data)

    @extend_schema(
        request=InputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: DepositOutputSerializer, 200: DepositOutputSerializer, 422: ErrorSerializer},
        description="Declare an incoming transfer. It credits nothing: the deposit is credited when custody "
        "reports it confirmed.",
    )
    def post(self, request: Request) -> Response:
        def declare() -> Response:
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            deposit, created = deposit_declare(
                user=request.user,
                asset=_asset(data.validated_data["asset"]),
                amount=data.validated_data["amount"],
                tx_id=data.validated_data.get("tx_id"),
            )
            return Response(
                DepositOutputSerializer(deposit).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
            )

        return idempotent(request, scope="deposits", handle=declare)


class WithdrawalOutputSerializer(serializers.ModelSerializer):
    amount = AmountField()
    fee = AmountField()

    class Meta:
        model = Withdrawal
        fields = ["id", "asset", "amount", "fee", "address", "status", "tx_id", "reason", "created_at", "completed_at"]


class WithdrawalsApi(APIView):
    class InputSerializer(StrictSerializer):
        asset = serializers.CharField(max_length=16)
        amount = AmountField()
        address = serializers.RegexField(VISIBLE_ASCII, max_length=128)

    @extend_schema(responses={200: WithdrawalOutputSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(WithdrawalOutputSerializer(withdrawals_for_user(user=request.user), many=True).data)

    @extend_schema(
        request=InputSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: WithdrawalOutputSerializer, 403: ErrorSerializer, 422: ErrorSerializer},
    )
    def post(self, request: Request) -> Response:
        def withdraw() -> Response:
            data = self.InputSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            withdrawal = withdrawal_request(
                user=request.user,
                asset=_asset(data.validated_data["asset"]),
                amount=data.validated_data["amount"],
                address=data.validated_data["address"],
            )
            return Response(WithdrawalOutputSerializer(withdrawal).data, status=status.HTTP_201_CREATED)

        return idempotent(request, scope="withdrawals", handle=withdraw)


# --- Custody --------------------------------------------------------------------------------------


class Custody:
    """Who a request signed with the custody secret comes from: custody, and nobody else."""

    is_authenticated = True
    pk = None


class CustodySignatureAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Custody, None]:
        try:
            signature_verify(
                request.headers.get(SIGNATURE_HEADER),
                request._request.body,
                secrets=settings.CUSTODY_WEBHOOK_SECRETS,
                now=time.time(),
                tolerance=settings.CUSTODY_SIGNATURE_TOLERANCE_SECONDS,
            )
        except SignatureError as exc:
            raise exceptions.AuthenticationFailed(exc.message, code=exc.code) from exc
        return Custody(), None

    def authenticate_header(self, request: Request) -> str:
        return "Custody-Signature"


class CustodySignatureScheme(OpenApiAuthenticationExtension):
    target_class = CustodySignatureAuthentication
    name = "custodySignature"

    def get_security_definition(self, auto_schema: object) -> dict:
        return {
            "type": "apiKey",
            "in": "header",
            "name": SIGNATURE_HEADER,
            "description": 't=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>"> with the custody secret.',
        }


class IsCustody(BasePermission):
    def has_permission(self, request: Request, view: APIView) -> bool:
        return isinstance(request.user, Custody)


class CustodyApi(APIView):
    """Custody's own endpoints: signed, never throttled (custody retries), no user token."""

    authentication_classes = [CustodySignatureAuthentication]
    permission_classes = [IsCustody]
    throttle_classes = []

    def initial(self, request: Request, *args: object, **kwargs: object) -> None:
        # A method these endpoints do not have is 405 whoever asks, as for every other endpoint,
        # rather than 401 for want of a signature nobody could give it.
        if not hasattr(self, request.method.lower()):
            raise exceptions.MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)


SIGNED = {"description": f'{SIGNATURE_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">'}


class CustodyDepositsApi(CustodyApi):
    class InputSerializer(StrictSerializer):
        asset = serializers.CharField(max_length=16)
        address = serializers.CharField(max_length=128)
        amount = AmountField()
        tx_id = serializers.RegexField(VISIBLE_ASCII, max_length=128)
        confirmations = serializers.IntegerField(min_value=0, max_value=1_000_000)

    class OutputSerializer(serializers.ModelSerializer):
        amount = AmountField()

        class Meta:
            model = Deposit
            fields = ["id", "asset", "address", "amount", "tx_id", "confirmations", "status"]

    class PendingSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        asset = serializers.CharField(source="asset_id")
        address = serializers.CharField()
        amount = AmountField()
        tx_id = serializers.CharField(allow_null=True)
        confirmations = serializers.IntegerField()
        status = serializers.ChoiceField(choices=Deposit.Status.choices)

    @extend_schema(
        responses={200: PendingSerializer(many=True)},
        description="Deposits users have declared, and deposits still confirming, for custody to watch. "
        + SIGNED["description"],
    )
    def get(self, request: Request) -> Response:
        return Response(self.PendingSerializer(deposits_awaiting_custody(), many=True).data)

    @extend_schema(
        request=InputSerializer,
        responses={201: OutputSerializer, 200: OutputSerializer, 409: ErrorSerializer},
        description="Custody saw a transfer to a deposit address. " + SIGNED["description"],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        deposit, created = deposit_report(
            asset=_asset(data.validated_data["asset"]),
            address=data.validated_data["address"],
            amount=data.validated_data["amount"],
            tx_id=data.validated_data["tx_id"],
            confirmations=data.validated_data["confirmations"],
        )
        return Response(
            self.OutputSerializer(deposit).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class CustodyWithdrawalsApi(CustodyApi):
    class InputSerializer(StrictSerializer):
        withdrawal_id = serializers.IntegerField(min_value=1)
        tx_id = serializers.RegexField(VISIBLE_ASCII, max_length=128, required=False, allow_null=True)
        status = serializers.ChoiceField(
            choices=[Withdrawal.Status.SENT, Withdrawal.Status.COMPLETED, Withdrawal.Status.FAILED]
        )

    class OutputSerializer(serializers.ModelSerializer):
        amount = AmountField()

        class Meta:
            model = Withdrawal
            fields = ["id", "asset", "amount", "address", "status", "tx_id"]

    @extend_schema(
        responses={200: OutputSerializer(many=True)},
        description="Withdrawals custody should send (fully approved) or has sent but not yet completed. "
        + SIGNED["description"],
    )
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(withdrawals_for_custody(), many=True).data)

    @extend_schema(
        request=InputSerializer,
        responses={200: OutputSerializer, 404: ErrorSerializer, 409: ErrorSerializer},
        description="Custody's news of a withdrawal. " + SIGNED["description"],
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        withdrawal = withdrawal_report(
            withdrawal_id=data.validated_data["withdrawal_id"],
            status=data.validated_data["status"],
            tx_id=data.validated_data.get("tx_id"),
        )
        return Response(self.OutputSerializer(withdrawal).data)
