"""Small pieces shared by every app's API."""

from decimal import Decimal

from drf_spectacular import openapi
from rest_framework import serializers

from accounts.models import AMOUNT_DIGITS, AMOUNT_PLACES


def decimal_str(value: Decimal | None) -> str | None:
    """A decimal as a plain string with no exponent and no trailing zeros: 50000, 0.01."""
    if value is None:
        return None
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


class AmountField(serializers.DecimalField):
    """A decimal amount: read from a string (or a JSON number), written as a decimal string."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("max_digits", AMOUNT_DIGITS)
        kwargs.setdefault("decimal_places", AMOUNT_PLACES)
        super().__init__(**kwargs)

    def to_representation(self, value: Decimal) -> str | None:
        return decimal_str(Decimal(value))


class CaseInsensitiveChoiceField(serializers.ChoiceField):
    """Accepts any case of a choice (`Buy`, `buy`, `BUY`), stores the canonical value and shows its
    label."""

    def to_internal_value(self, data: object) -> str:
        if isinstance(data, str):
            folded = {str(key).lower(): key for key in self.choices}
            if data.lower() in folded:
                return folded[data.lower()]
        self.fail("invalid_choice", input=data)
        raise AssertionError("unreachable")

    def to_representation(self, value: str) -> str:
        return str(self.choices.get(value, value))


class AutoSchema(openapi.AutoSchema):
    """Names schema components after the view that declares the serializer (`RegisterApi.InputSerializer`
    becomes `RegisterInput`), so every view can call its serializers `InputSerializer` and
    `OutputSerializer` without their components colliding."""

    def get_serializer_name(self, serializer: serializers.Serializer, direction: str) -> str:
        outer, _, inner = type(serializer).__qualname__.rpartition(".")
        return f"{outer.removesuffix('Api')}{inner}" if outer else inner
