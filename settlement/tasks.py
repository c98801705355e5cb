import time

import structlog
from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError
from redis.exceptions import RedisError

from settlement.reconciliation import reconciliation_run
from settlement.services import market_settle, markets_with_backlog

log = structlog.get_logger(__name__)

# How long a "task queued" mark lasts if the task it announces never starts (Redis lost the queue, a
# worker was killed before it took it): after that, the consumer queues another.
_QUEUED_MARK_SECONDS = 5


def _queued_key(market: str) -> str:
    return f"settle:queued:{market}"


def settle_market_soon(market: str) -> None:
    """Queue a settlement of the market, unless one is queued that has not started yet: it will read
    whatever the inbox holds when it starts. The consumer stores a Kafka batch every few
    milliseconds under load; a task for each queued hundreds that found nothing left to settle, each
    costing the worker and the database a transaction. Without Redis, it queues one regardless."""
    try:
        if not cache.add(_queued_key(market), 1, timeout=_QUEUED_MARK_SECONDS):
            return
    except (RedisError, OSError):
        log.warning("settle_queued_mark_unavailable", market=market, exc_info=True)
    settle_market.delay(market)


# One task settles a market for at most this long, then hands over to a fresh task so that one busy
# market cannot hold a worker forever.
_TASK_BUDGET_SECONDS = 10.0


@shared_task(autoretry_for=(OperationalError,), retry_backoff=1, retry_backoff_max=30, max_retries=None, acks_late=True)
def settle_market(market: str) -> int:
    """Settle the market's backlog, a batch at a time.

    A batch shorter than the limit settled everything the inbox held when it was read; whatever the
    consumer stored since comes with a task of its own (and the beat sweep covers a lost one), so
    the worker is free at once instead of reading the inbox once more to find it empty.
    """
    started = time.monotonic()
    applied = 0
    try:
        # From here on, events the consumer stores queue a task of their own.
        cache.delete(_queued_key(market))
    except (RedisError, OSError):
        log.warning("settle_queued_mark_unavailable", market=market, exc_info=True)
    while True:
        count = market_settle(market=market, limit=settings.SETTLEMENT_BATCH_SIZE)
        applied += count
        if count < settings.SETTLEMENT_BATCH_SIZE:
            return applied
        if time.monotonic() - started > _TASK_BUDGET_SECONDS:
            settle_market.delay(market)
            return applied


@shared_task(ignore_result=True)
def settle_backlog() -> list[str]:
    """Beat's safety net: whatever Redis or a worker lost, a market with unsettled events gets a task."""
    markets = markets_with_backlog()
    for market in markets:
        settle_market.delay(market)
    return markets


@shared_task(ignore_result=True)
def reconcile() -> bool:
    """Every invariant, each market's hash chain verified from where the last run left it: the run
    that beat makes often, whose cost follows the new events rather than the whole history."""
    return reconciliation_run(full=False).ok


@shared_task(ignore_result=True)
def reconcile_full() -> bool:
    """Every invariant, every hash chain verified from genesis: beat's slower run, which finds a
    change to an event that an earlier run had already verified."""
    return reconciliation_run(full=True).ok
