"""Liveness, readiness and Prometheus metrics."""

import socket
import time
from collections.abc import Callable, Iterator

import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

ENGINE_STATE_KEY = "engine:state"


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
    """200 only when every service the API needs answers."""
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            results[name] = {"ok": False, "error": str(exc)[:200]}
        else:
            results[name] = {"ok": True}
        results[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    ready = all(r["ok"] for r in results.values())
    return JsonResponse(
        {"status": "ready" if ready else "unavailable", "checks": results}, status=200 if ready else 503
    )


class ExchangeCollector(Collector):
    """Business gauges read at scrape time from the database and the engine's published state, so
    every API process reports the same figures."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from accounts.models import Deposit, Withdrawal
        from matching.models import Order, OutboxMessage
        from settlement.models import Alert, SettlementCursor

        settled = GaugeMetricFamily("exchange_settled_sequence", "Last engine sequence settled", labels=["market"])
        received = GaugeMetricFamily(
            "exchange_received_sequence", "Highest engine sequence stored in the inbox", labels=["market"]
        )
        emitted = GaugeMetricFamily("exchange_emitted_sequence", "Last sequence the engine emitted", labels=["market"])
        lag = GaugeMetricFamily(
            "exchange_settlement_lag_events", "Events emitted by the engine and not yet settled", labels=["market"]
        )
        stopped = GaugeMetricFamily(
            "exchange_settlement_stopped", "1 when settlement of a market is stopped", labels=["market", "reason"]
        )
        engine_state = cache.get(ENGINE_STATE_KEY) or {}
        for cursor in SettlementCursor.objects.all():
            settled.add_metric([cursor.market], cursor.seq)
            received.add_metric([cursor.market], cursor.received_seq)
            engine_seq = engine_state.get("sequences", {}).get(cursor.market, cursor.received_seq)
            emitted.add_metric([cursor.market], engine_seq)
            lag.add_metric([cursor.market], max(engine_seq, cursor.received_seq) - cursor.seq)
            stopped.add_metric([cursor.market, cursor.status], 0 if cursor.status == "ok" else 1)
        yield from (settled, received, emitted, lag, stopped)

        orders = GaugeMetricFamily("exchange_orders", "Orders by status", labels=["status"])
        for row in Order.objects.values("status").annotate(n=Count("id")):
            orders.add_metric([row["status"]], row["n"])
        yield orders

        outbox = GaugeMetricFamily("exchange_outbox_unpublished", "Commands not yet acknowledged by Kafka")
        outbox.add_metric([], OutboxMessage.objects.filter(published_at__isnull=True).count())
        yield outbox

        waiting = GaugeMetricFamily("exchange_operator_queue", "Items waiting for an operator", labels=["kind"])
        waiting.add_metric(["deposit"], Deposit.objects.filter(status=Deposit.Status.AWAITING_APPROVAL).count())
        waiting.add_metric(["withdrawal"], Withdrawal.objects.filter(status=Withdrawal.Status.PENDING).count())
        yield waiting

        alerts = GaugeMetricFamily("exchange_open_alerts", "Unresolved alerts", labels=["kind"])
        for row in Alert.objects.filter(resolved_at__isnull=True).values("kind").annotate(n=Count("id")):
            alerts.add_metric([row["kind"]], row["n"])
        yield alerts

        if engine_state:
            commands = GaugeMetricFamily("exchange_engine_commands", "Commands the matching worker has applied")
            commands.add_metric([], engine_state.get("commands", 0))
            yield commands


_registry = CollectorRegistry(auto_describe=False)
_registry.register(ExchangeCollector())


def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(_registry), content_type=CONTENT_TYPE_LATEST)
