"""Small pieces shared by every app's API, and the schema generator that documents them."""

import re
from decimal import Decimal
from typing import Any

from django.core.validators import ProhibitNullCharactersValidator
from drf_spectacular import openapi
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import AMOUNT_DIGITS, AMOUNT_PLACES

# The only spelling of an amount the API reads and writes: an optional minus sign, 1 to 20 digits,
# and optionally a point and 1 to 18 more (NUMERIC(38, 18)). No exponent, no spaces, no JSON number.
AMOUNT_PATTERN = rf"^-?[0-9]{{1,{AMOUNT_DIGITS - AMOUNT_PLACES}}}(\.[0-9]{{1,{AMOUNT_PLACES}}})?$"
_AMOUNT = re.compile(AMOUNT_PATTERN)
NO_NUL_PATTERN = r"^[^\u0000]*$"


def decimal_str(value: Decimal | None) -> str | None:
    """A decimal as a plain string with no exponent and no trailing zeros: 50000, 0.01."""
    if value is None:
        return None
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@extend_schema_field({"type": "string", "format": "decimal", "pattern": AMOUNT_PATTERN})
class AmountField(serializers.DecimalField):
    """A decimal amount, read from and written as a plain decimal string (`"0.01"`)."""

    default_error_messages = {
        **serializers.DecimalField.default_error_messages,
        "not_plain": 'Send amounts as plain decimal strings, such as "0.01".',
    }

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("max_digits", AMOUNT_DIGITS)
        kwargs.setdefault("decimal_places", AMOUNT_PLACES)
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> Decimal:
        if not isinstance(data, str) or not _AMOUNT.fullmatch(data):
            self.fail("not_plain")
        return super().to_internal_value(data)

    def to_representation(self, value: Decimal) -> str | None:
        return decimal_str(Decimal(value))


class CaseInsensitiveChoiceField(serializers.ChoiceField):
    """Accepts any case of a choice (`Buy`, `buy`, `BUY`), stores the canonical value and writes that
    value (`buy`), which is what the schema's enum lists."""

    def to_internal_value(self, data: object) -> str:
        if isinstance(data, str):
            folded = {str(key).lower(): key for key in self.choices}
            if data.lower() in folded:
                return folded[data.lower()]
        self.fail("invalid_choice", input=data)
        raise AssertionError("unreachable")


# The addresses Django's EmailValidator takes, less its rarities (quoted local parts, IP literals,
# internationalised domains), which the schema leaves out rather than promise.
EMAIL_PATTERN = (
    r"^[-!#$%&'*+/=?^_`{}|~0-9A-Za-z]+(\.[-!#$%&'*+/=?^_`{}|~0-9A-Za-z]+)*"
    r"@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


@extend_schema_field({"type": "string", "format": "email", "pattern": EMAIL_PATTERN})
class EmailField(serializers.EmailField):
    """An email address, with the schema saying which ones the API takes."""


class QuerySerializer(serializers.Serializer):
    """Query parameters. An empty one (`?symbol=`) is refused, as the schema says (`minLength: 1`),
    instead of being read as if it were absent."""

    def to_internal_value(self, data: Any) -> dict:
        empty = {name: ["This parameter may not be empty."] for name in self.fields if data.get(name) == ""}
        if empty:
            raise serializers.ValidationError(empty)
        return super().to_internal_value(data)


# --- The error shape, as the schema shows it ------------------------------------------------------


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable: `invalid`, `insufficient_funds`, ...")
    message = serializers.CharField(help_text="For people.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="What is wrong with each input field, by field name; empty when no field is to blame.",
    )


class ErrorSerializer(serializers.Serializer):
    """Every 4xx and 503 answer of the API (`exchange.errors`)."""

    error = ErrorDetailSerializer()


ERROR_DESCRIPTIONS = {
    400: "Invalid input, or a request the rules refuse (`error.code` says which).",
    401: "Missing, invalid, expired or revoked credentials.",
    403: "Not allowed for this account.",
    404: "No such resource.",
    409: "Conflicts with the resource's current state.",
    422: "The same Idempotency-Key was sent with another body.",
    429: "Too many requests; retry later.",
    503: "A service the API needs (database, order book) is unavailable; retry later.",
}


class AutoSchema(openapi.AutoSchema):
    """Names schema components after the view that declares the serializer (`RegisterApi.InputSerializer`
    becomes `RegisterInput`), so every view can call its serializers `InputSerializer` and
    `OutputSerializer` without their components colliding.

    Every operation lists the error answers it can give, each with the `Error` shape: 400 where it takes
    a body or query or header parameters, 401 where it needs credentials, 404 where a path names a
    resource, 429 where it is throttled, 503 everywhere (the database can be away). Views add what only
    they answer (403, 409, 422) in `extend_schema(responses=...)` with `ErrorSerializer`. Every field of
    an answer is always present, so all of them are `required` in responses."""

    def get_serializer_name(self, serializer: serializers.Serializer, direction: str) -> str:
        outer, _, inner = type(serializer).__qualname__.rpartition(".")
        return f"{outer.removesuffix('Api')}{inner}" if outer else inner

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        parameters = operation.get("parameters", [])
        statuses = {503}
        if "requestBody" in operation or any(p["in"] in ("query", "header") for p in parameters):
            statuses.add(400)
        if any(requirement for requirement in operation.get("security", [])):
            statuses.add(401)
        if any(p["in"] == "path" for p in parameters):
            statuses.add(404)
        if self.view.get_throttles():
            statuses.add(429)
        responses = operation["responses"]
        for status in sorted(statuses):
            responses.setdefault(str(status), self._error_response(status))
        for status, response in responses.items():
            if int(status) in ERROR_DESCRIPTIONS and not response.get("description"):
                response["description"] = ERROR_DESCRIPTIONS[int(status)]
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_response(self, status: int) -> dict:
        response = self._get_response_for_code(ErrorSerializer, str(status))
        response["description"] = ERROR_DESCRIPTIONS[status]
        return response

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        # DRF refuses a NUL character in any text field; the schema says so where no pattern of the
        # field's own already rules it out.
        if (
            direction == "request"
            and isinstance(field, serializers.CharField)
            and isinstance(schema, dict)
            and "pattern" not in schema
            and not isinstance(field, (serializers.RegexField, serializers.EmailField))
            and any(isinstance(v, ProhibitNullCharactersValidator) for v in field.validators)
        ):
            schema["pattern"] = NO_NUL_PATTERN
        return schema

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "response":
            schema["required"] = sorted(schema["properties"])
        return schema
