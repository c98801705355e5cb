from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.apis import (
    BalancesApi,
    CustodyDepositsApi,
    CustodyWithdrawalsApi,
    DepositAddressApi,
    DepositsApi,
    LogoutApi,
    PasswordChangeApi,
    RegisterApi,
    TokenApi,
    TokenRefreshApi,
    WithdrawalsApi,
)
from exchange import health
from matching.apis import MarketDepthApi, MarketsApi, OrderDetailApi, OrdersApi, OrdersBatchApi
from settlement.apis import FillsApi, MarketTradesApi

api = [
    path("auth/register/", RegisterApi.as_view(), name="register"),
    path("auth/token/", TokenApi.as_view(), name="token"),
    path("auth/token/refresh/", TokenRefreshApi.as_view(), name="token-refresh"),
    path("auth/logout/", LogoutApi.as_view(), name="logout"),
    path("auth/password/", PasswordChangeApi.as_view(), name="password-change"),
    path("balances/", BalancesApi.as_view(), name="balances"),
    path("deposits/address/", DepositAddressApi.as_view(), name="deposit-address"),
    path("deposits/", DepositsApi.as_view(), name="deposits"),
    path("withdrawals/", WithdrawalsApi.as_view(), name="withdrawals"),
    path("custody/deposits/", CustodyDepositsApi.as_view(), name="custody-deposits"),
    path("custody/withdrawals/", CustodyWithdrawalsApi.as_view(), name="custody-withdrawals"),
    path("markets/", MarketsApi.as_view(), name="markets"),
    path("markets/<str:symbol>/depth/", MarketDepthApi.as_view(), name="market-depth"),
    path("markets/<str:symbol>/trades/", MarketTradesApi.as_view(), name="market-trades"),
    path("orders/", OrdersApi.as_view(), name="orders"),
    path("orders/batch/", OrdersBatchApi.as_view(), name="orders-batch"),
    path("orders/<int:order_id>/", OrderDetailApi.as_view(), name="order-detail"),
    path("trades/", FillsApi.as_view(), name="fills"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("api/", include(api)),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]

handler400 = "core.errors.json_bad_request"
handler404 = "core.errors.json_not_found"
handler500 = "core.errors.json_server_error"
