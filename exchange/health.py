"""Liveness, readiness and Prometheus metrics."""

import hmac
import socket
import time
from collections.abc import Callable, Iterator

import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.errors import error_body
from settlement.selectors import operations_overview

log = structlog.get_logger(__name__)


def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers; nothing else is checked."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_kafka() -> None:
    errors = []
    for server in settings.KAFKA["BOOTSTRAP_SERVERS"]:
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as exc:
            errors.append(f"{server}: {exc}")
    raise ConnectionError("; ".join(errors))


def _check_celery_broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as broker:
        broker.ensure_connection(max_retries=1, timeout=2)


def _check_cache() -> None:
    cache.set("readyz", "1", timeout=5)


CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "kafka": _check_kafka,
    "celery_broker": _check_celery_broker,
    "cache": _check_cache,
}


def readyz(request: HttpRequest) -> JsonResponse:
    """200 only when every service the API needs answers. The answer says which one is up or down and
    nothing else: why a check failed (addresses, error text) goes to the log, not to whoever asks."""
    checks: dict[str, str] = {}
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            check()
        except Exception:  # any failure means not ready
            checks[name] = "down"
            log.warning(
                "readyz_check_failed", check=name, ms=round((time.monotonic() - started) * 1000, 1), exc_info=True
            )
        else:
            checks[name] = "up"
    ready = all(state == "up" for state in checks.values())
    return JsonResponse({"status": "ready" if ready else "unavailable", "checks": checks}, status=200 if ready else 503)


class ExchangeCollector(Collector):
    """Business gauges, read at scrape time from the operations overview."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        overview = operations_overview()
        per_market = {
            "settled": ("exchange_settled_sequence", "Last engine sequence settled"),
            "received": ("exchange_received_sequence", "Highest engine sequence stored in the inbox"),
            "emitted": ("exchange_emitted_sequence", "Last sequence the engine emitted"),
            "lag": ("exchange_settlement_lag_events", "Events emitted by the engine and not yet settled"),
        }
        for key, (name, documentation) in per_market.items():
            family = GaugeMetricFamily(name, documentation, labels=["market"])
            for market in overview["markets"]:
                family.add_metric([market["market"]], market[key])
            yield family
        stopped = GaugeMetricFamily(
            "exchange_settlement_stopped", "1 when settlement of a market is stopped", labels=["market", "reason"]
        )
        for market in overview["markets"]:
            stopped.add_metric([market["market"], market["status"]], 0 if market["status"] == "ok" else 1)
        yield stopped

        orders = GaugeMetricFamily("exchange_orders", "Orders by status", labels=["status"])
        for status, count in overview["orders"].items():
            orders.add_metric([status], count)
        yield orders

        outbox = GaugeMetricFamily("exchange_outbox_unpublished", "Commands not yet acknowledged by Kafka")
        outbox.add_metric([], overview["outbox_unpublished"])
        yield outbox

        waiting = GaugeMetricFamily("exchange_operator_queue", "Items waiting for an operator", labels=["kind"])
        waiting.add_metric(["deposit"], overview["deposits_awaiting"])
        waiting.add_metric(["withdrawal"], overview["withdrawals_pending"])
        yield waiting

        alerts = GaugeMetricFamily("exchange_open_alerts", "Unresolved alerts", labels=["kind"])
        for kind, count in overview["alerts"].items():
            alerts.add_metric([kind], count)
        yield alerts

        run = overview["last_reconciliation"]
        if run is not None:
            reconciled = GaugeMetricFamily(
                "exchange_reconciliation_ok", "1 when the last reconciliation found every invariant holding"
            )
            reconciled.add_metric([], 1 if run.ok else 0)
            yield reconciled

        if overview["engine_commands"] is not None:
            commands = GaugeMetricFamily("exchange_engine_commands", "Commands the matching worker has applied")
            commands.add_metric([], overview["engine_commands"])
            yield commands


_registry = CollectorRegistry(auto_describe=False)
_registry.register(ExchangeCollector())


def _metrics_refusal(code: str, message: str) -> JsonResponse:
    response = JsonResponse(error_body(code, message), status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format, for a scraper that presents `Authorization: Bearer <METRICS_TOKEN>`."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _metrics_refusal("not_authenticated", "Give the metrics token as `Authorization: Bearer <token>`.")
    if not hmac.compare_digest(token.strip().encode(), settings.METRICS_TOKEN.encode()):
        return _metrics_refusal("authentication_failed", "The metrics token is not valid.")
    return HttpResponse(generate_latest(_registry), content_type=CONTENT_TYPE_LATEST)
