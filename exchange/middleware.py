from collections.abc import Callable

import structlog
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from pghistory.middleware import HistoryMiddleware

from core.errors import error_body

log = structlog.get_logger(__name__)


class DatabaseUnavailableMiddleware:
    """A request that finds PostgreSQL away gets 503 (and `Retry-After`), whatever view it hit.

    The API's own views already answer 503 through the DRF exception handler; this covers the admin,
    the health pages and anything raised outside a DRF view.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        log.warning("database_unavailable", path=request.path, error=str(exception))
        response = JsonResponse(
            error_body("service_unavailable", "The database is unavailable; try again shortly."), status=503
        )
        response["Retry-After"] = "5"
        return response


class AdminHistoryMiddleware(HistoryMiddleware):
    """Attach the operator and the page to the history of what they change in the admin.

    Only the admin changes tracked rows (assets, markets, restrictions, staff), so the API's requests
    skip the context and the statement it adds to each transaction."""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/admin/"):
            return super().__call__(request)
        return self.get_response(request)
