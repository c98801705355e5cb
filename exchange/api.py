"""Small pieces shared by every app's API: the amount field and the strict input serializer."""

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from drf_spectacular import openapi
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from accounts.models import AMOUNT_DIGITS, AMOUNT_PLACES

# ASCII digits with at most one decimal point between digits; `[0-9]`, unlike `\d`, matches no other
# script's digits, which `Decimal` would read.
AMOUNT_PATTERN = r"^[0-9]+(?:\.[0-9]+)?$"
_UNSIGNED = re.compile(AMOUNT_PATTERN)
_SIGNED = re.compile(r"^-?[0-9]+(?:\.[0-9]+)?$")


def decimal_str(value: Decimal | None) -> str | None:
    """A decimal as a plain string with no exponent and no trailing zeros: 50000, 0.01."""
    if value is None:
        return None
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def is_plain_decimal(text: str, *, signed: bool = False) -> bool:
    """`text` is digits with at most one point, and a leading minus only if `signed`: no exponent,
    no spaces, underscores, plus sign, NaN or infinity."""
    return (_SIGNED if signed else _UNSIGNED).fullmatch(text) is not None


@extend_schema_field({"type": "string", "format": "decimal", "pattern": AMOUNT_PATTERN, "example": "0.01"})
class AmountField(serializers.DecimalField):
    """A decimal amount: read only from a plain decimal string, written as a decimal string.

    No amount the API takes is negative, so no sign is read. A JSON number is refused rather than
    read: a float has already lost digits by the time it is parsed. Whatever the field refuses
    carries a code of its own (see `exchange.errors.FIELD_CODES`).
    """

    default_error_messages = {
        "amount_not_a_string": 'Amounts are JSON strings of a decimal, such as "0.01"; numbers are not accepted.',
        "invalid_amount": "Not a plain decimal: ASCII digits with at most one decimal point, and no exponent, "
        "sign, spaces or other characters.",
        "too_many_digits": "At most {max_digits} significant digits, {max_whole_digits} of them before the point.",
        "invalid_precision": "At most {decimal_places} decimal places.",
    }
    # DRF's own checks, under the exchange's codes.
    _CODES = {
        "invalid": "invalid_amount",
        "max_string_length": "too_many_digits",
        "max_digits": "too_many_digits",
        "max_whole_digits": "too_many_digits",
        "max_decimal_places": "invalid_precision",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_digits", AMOUNT_DIGITS)
        kwargs.setdefault("decimal_places", AMOUNT_PLACES)
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> Decimal:
        if not isinstance(data, str):
            self.fail("amount_not_a_string")
        if not is_plain_decimal(data):
            self.fail("invalid_amount")
        return super().to_internal_value(data)

    def fail(self, key: str, **kwargs: object) -> None:
        code = self._CODES.get(key, key)
        limits = {
            "max_digits": self.max_digits,
            "max_whole_digits": self.max_whole_digits,
            "decimal_places": self.decimal_places,
        }
        raise serializers.ValidationError(self.error_messages[code].format(**{**limits, **kwargs}), code=code)

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


class UnknownFieldsMixin:
    """Refuses input naming a field the serializer does not take (400 `unknown_field`, one entry per
    unknown name in `fields`), before any other check: a client cannot set a property it may not
    (`status`, `user`, `locked`) by adding it, nor have a misspelt filter silently ignored."""

    def to_internal_value(self, data: object) -> Any:
        if isinstance(data, Mapping):
            taken = {name for name, field in self.fields.items() if not field.read_only}
            unknown = [key for key in data if key not in taken]
            if unknown:
                detail = ErrorDetail("This endpoint does not take this field.", code="unknown_field")
                raise serializers.ValidationError({str(key): [detail] for key in unknown})
        return super().to_internal_value(data)


class StrictSerializer(UnknownFieldsMixin, serializers.Serializer):
    """The base of every serializer that reads a request's body or query string."""


class AutoSchema(openapi.AutoSchema):
    """Names schema components after the view that declares the serializer (`RegisterApi.InputSerializer`
    becomes `RegisterInput`), so every view can call its serializers `InputSerializer` and
    `OutputSerializer` without their components colliding."""

    def get_serializer_name(self, serializer: serializers.Serializer, direction: str) -> str:
        outer, _, inner = type(serializer).__qualname__.rpartition(".")
        return f"{outer.removesuffix('Api')}{inner}" if outer else inner
