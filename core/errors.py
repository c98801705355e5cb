"""One error shape for the whole API: `{"error": {"code", "message", "fields"}}` with a 4xx status.

Services raise the domain errors below; the DRF exception handler turns them, DRF's own errors,
SimpleJWT's and Django's into that shape. A database that is away answers 503, never a 500.
"""

from decimal import Decimal
from typing import Any

import structlog
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DatabaseError, DataError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = structlog.get_logger(__name__)


class ExchangeError(Exception):
    status_code = status.HTTP_400_BAD_REQUEST
    # Seconds for the `Retry-After` header, for an error that passes if the client waits.
    retry_after: int | None = None

    def __init__(self, code: str, message: str, *, field: str | None = None, fields: dict | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = dict(fields or {})
        if field:
            self.fields.setdefault(field, [message])


class InvalidRequest(ExchangeError):
    pass


class InsufficientFunds(ExchangeError):
    def __init__(self, *, asset: str, needed: Decimal) -> None:
        super().__init__("insufficient_funds", f"Insufficient {asset} available: {needed.normalize():f} needed.")
        self.asset = asset
        self.needed = needed


class Unauthorized(ExchangeError):
    """A token that no longer opens anything: used twice, ended, past its login's lifetime."""

    status_code = status.HTTP_401_UNAUTHORIZED


class Forbidden(ExchangeError):
    """The caller may not do this: a restricted user, an operator without the permission, an operator
    acting on their own money, the same person giving both halves of a four-eyes decision."""

    status_code = status.HTTP_403_FORBIDDEN


class Conflict(ExchangeError):
    status_code = status.HTTP_409_CONFLICT


class Unprocessable(ExchangeError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY


class NotFound(ExchangeError):
    status_code = status.HTTP_404_NOT_FOUND


class Unavailable(ExchangeError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


class Overloaded(Unavailable):
    """More orders wait behind the API than it may take in (`core.throttling.BacklogThrottle`)."""

    retry_after = 1


# Codes of field errors that say more than DRF's generic ones (`required`, `null`, `invalid_choice`,
# which answer `invalid`): the first field error carrying one of them gives the answer its `code`.
FIELD_CODES = frozenset(
    {"unknown_field", "amount_not_a_string", "invalid_amount", "too_many_digits", "invalid_precision"}
)

# PostgreSQL's "numeric value out of range": a result too large for its NUMERIC(38, 18) column, such
# as a balance credited past 10^20. The request's transaction rolls back; the client sent too much.
NUMERIC_OUT_OF_RANGE = "22003"


def error_body(code: str, message: str, fields: dict | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _flatten(detail: Any) -> dict[str, list[str]] | list[str] | str:
    if isinstance(detail, dict):
        return {str(key): _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            return [str(item) for item in detail]
        return [_flatten(item) for item in detail]
    return str(detail)


def _first_message(fields: Any) -> str:
    while isinstance(fields, (dict, list)) and fields:
        fields = next(iter(fields.values())) if isinstance(fields, dict) else fields[0]
    return str(fields) if fields else "Invalid input."


def _headline(detail: Any, fields: Any) -> tuple[str, str]:
    """The answer's code and message: those of the first field error (in field order) whose code is
    in FIELD_CODES, else `invalid` and the first message."""
    stack = [detail]
    while stack:
        node = stack.pop(0)
        if isinstance(node, dict):
            stack[:0] = list(node.values())
        elif isinstance(node, list):
            stack[:0] = node
        elif getattr(node, "code", None) in FIELD_CODES:
            return str(node.code), str(node)
    return "invalid", _first_message(fields)


def validation_error_body(detail: Any) -> dict[str, Any]:
    """The error a serializer's `errors` (or a ValidationError's detail) answers."""
    fields = _flatten(detail)
    if not isinstance(fields, dict):
        fields = {"non_field_errors": fields if isinstance(fields, list) else [fields]}
    code, message = _headline(detail, fields)
    return error_body(code, message, fields)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ExchangeError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return Response(error_body(exc.code, exc.message, exc.fields), status=exc.status_code, headers=headers)
    if isinstance(exc, RequestDataTooBig):
        # Django's own limit, met by a view that reads the raw body (custody's signature check).
        return Response(error_body("request_too_large", "The request body is too large."), status=413)
    if isinstance(exc, DataError) and getattr(exc.__cause__, "sqlstate", None) == NUMERIC_OUT_OF_RANGE:
        log.warning("amount_out_of_range", error=str(exc))
        return Response(error_body("amount_too_large", "An amount or a balance would exceed its limit."), status=400)
    if isinstance(exc, DjangoValidationError):
        fields = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return Response(error_body("invalid", _first_message(fields), fields), status=400)
    if isinstance(exc, (OperationalError, InterfaceError)):
        log.warning("database_unavailable", error=str(exc))
        return Response(
            error_body("service_unavailable", "The database is unavailable; try again shortly."), status=503
        )
    if isinstance(exc, DatabaseError):
        log.error("database_error", exc_info=exc)
        return Response(error_body("service_unavailable", "A database error occurred; try again."), status=503)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = validation_error_body(exc.detail)
        return response

    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else None
    code = codes if isinstance(codes, str) else "error"
    if isinstance(detail, dict):
        # SimpleJWT: {"detail": ..., "code": "token_not_valid", "messages": [...]}
        code = str(detail.get("code", code))
        message = str(detail.get("detail", _first_message(detail)))
    else:
        message = str(detail)
    response.data = error_body(code, message)
    return response


def json_not_found(request, exception=None):
    return JsonResponse(error_body("not_found", "Not found."), status=404)


def json_server_error(request):
    return JsonResponse(error_body("server_error", "Internal error; it has been logged."), status=500)


def json_bad_request(request, exception=None):
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)
