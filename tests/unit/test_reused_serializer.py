"""An order's answer, written field by field by `ReusedSerializer`, is what DRF's serializer writes."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from core.api import AMOUNT_PLACES, ReusedSerializer, _columns_shown
from matching.apis import ORDER_WRITER, OrderOutputSerializer
from matching.models import Order

amounts = st.decimals(min_value=0, max_value=Decimal("1e12"), places=AMOUNT_PLACES, allow_nan=False)
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


def choice(choices: type) -> st.SearchStrategy[str]:
    return st.sampled_from([value for value, _ in choices.choices])


orders = st.builds(
    Order,
    id=st.integers(min_value=1, max_value=2**62),
    cid=st.from_regex(r"\A[A-Za-z0-9_-]{16,32}\Z"),
    market_id=st.sampled_from(["BTC_USDT", "ETH_BTC"]),
    side=choice(Order.Side),
    order_type=choice(Order.Type),
    time_in_force=choice(Order.TimeInForce),
    post_only=st.booleans(),
    stp=choice(Order.SelfTrade),
    price=st.none() | amounts,
    quantity=st.none() | amounts,
    quote_quantity=st.none() | amounts,
    filled=amounts,
    filled_quote=amounts,
    fee=amounts,
    locked=amounts,
    status=choice(Order.Status),
    reason=st.sampled_from(["", "cancelled", "post_only_would_take"]),
    cancel_requested_at=st.none() | moments,
    created_at=moments,
    updated_at=moments,
)


def test_an_orders_answer_is_written_column_by_column():
    # Otherwise the test below compares DRF with itself.
    assert _columns_shown(OrderOutputSerializer()) is not None


@settings(max_examples=300, deadline=None)
@given(order=orders)
def test_an_orders_answer_is_what_drfs_serializer_writes(order):
    written = ORDER_WRITER.write(order)
    assert written == OrderOutputSerializer(order).data
    assert list(written) == list(OrderOutputSerializer(order).data)  # the same order of keys in the JSON


class Shown(serializers.ModelSerializer):
    """An answer that shows more than its model's own columns."""

    username = serializers.CharField(source="user.username")
    age = serializers.SerializerMethodField()

    class Meta:
        model = Order
        fields = ["id", "market", "username", "age"]

    def get_age(self, order: Order) -> float:
        return (order.updated_at - order.created_at).total_seconds()


def test_any_other_answer_is_written_by_drf(django_user_model):
    assert _columns_shown(Shown()) is None
    assert _columns_shown(serializers.Serializer()) is None

    now = datetime.now(UTC)
    user = django_user_model(username="writer")
    order = Order(id=7, market_id="BTC_USDT", user=user, created_at=now - timedelta(seconds=3), updated_at=now)
    assert ReusedSerializer(Shown).write(order) == {"id": 7, "market": "BTC_USDT", "username": "writer", "age": 3.0}
