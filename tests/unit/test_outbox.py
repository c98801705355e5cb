"""The outbox and its relay: the relay finds new rows by looking, publishes them in batches
against the real broker, marks only what was acknowledged, and orders the engine never answered are
asked for again, less and less often."""

import itertools
import threading
import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kafka.errors import KafkaTimeoutError

from core.kafka import client, topics
from matching import schemas
from matching.engine import CancelOrder
from matching.management.commands.run_outbox_relay import Relay
from matching.models import Order, OutboxMessage
from matching.selectors import ENGINE_STATE_KEY
from matching.services import orders_resend_stale, outbox_add, outbox_relay_batch
from settlement.models import SettlementCursor
from tests.unit.conftest import place

# Order ids no other test of the run (they share the topics) puts in a command.
_ids = itertools.count(int(time.time() * 1000) % 10**9 * 1000)


@pytest.fixture
def order(btc_usdt, make_user, fund) -> Order:
    client.ensure_topics()
    cache.delete(ENGINE_STATE_KEY)  # no worker has said anything: the sweep goes by time alone
    user = make_user()
    fund(user, "USDT", "1000")
    return place(user, "outbox", "buy", "50000", "0.01")


@pytest.fixture
def queued(btc_usdt) -> list[int]:
    """Five commands in the outbox, each naming an order id of its own; their ids, in order."""
    client.ensure_topics()
    ids = [next(_ids) for _ in range(5)]
    for order_id in ids:
        outbox_add(CancelOrder(market="BTC_USDT", order_id=order_id, user_id=1, ts=0))
    return ids


def commands_on_topic() -> list[dict]:
    consumer = client.consumer(auto_offset_reset="earliest", consumer_timeout_ms=2000)
    try:
        consumer.assign(client.partitions_of(topics.ORDERS))
        consumer.seek_to_beginning()
        return [schemas.decode_command(r.value).to_dict() for r in consumer]
    finally:
        consumer.close()


def order_ids_on_topic(wanted: list[int]) -> list[int]:
    """The order ids of `wanted` in the order the topic holds them (all are of one market, so of one
    partition)."""
    return [c["order_id"] for c in commands_on_topic() if c.get("order_id") in wanted]


def last_command_for(order_id: int) -> dict:
    return [c for c in commands_on_topic() if c.get("order_id") == order_id][-1]


def unpublished() -> int:
    return OutboxMessage.objects.filter(published_at__isnull=True).count()


# --- writing to the outbox: one statement, nothing else at commit ------------------------------------


@pytest.mark.django_db
def test_the_outbox_table_has_no_trigger_to_notify_the_relay():
    """A NOTIFY makes PostgreSQL take one database-wide lock from the commit until its flush is
    done, so every transaction that sent one commits after the one before it: with a trigger
    notifying the relay, single orders per second halved. The relay looks for rows instead."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'matching_outboxmessage'::regclass AND NOT tgisinternal"
        )
        assert cursor.fetchall() == []


@pytest.mark.django_db
def test_queuing_a_command_costs_one_statement_and_publishes_nothing_after_commit(btc_usdt):
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            outbox_add(CancelOrder(market="BTC_USDT", order_id=1, user_id=1, ts=0))
        assert len(queries) == 1
        assert connection.run_on_commit == []


# --- the relay's batches -------------------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.django_db
def test_the_relay_publishes_a_batch_in_order_and_marks_it_with_one_update(queued):
    with CaptureQueriesContext(connection) as queries:
        done = outbox_relay_batch(limit=3)
    assert (done.taken, done.sent, done.failed) == (3, 3, False)
    assert [q["sql"].split()[0] for q in queries] == ["SELECT", "UPDATE"]
    assert unpublished() == 2
    assert order_ids_on_topic(queued) == queued[:3]

    with CaptureQueriesContext(connection) as queries:
        assert outbox_relay_batch(limit=3).sent == 2
    assert len(queries) == 2
    assert order_ids_on_topic(queued) == queued
    assert set(OutboxMessage.objects.values_list("attempts", flat=True)) == {1}

    with CaptureQueriesContext(connection) as queries:
        assert outbox_relay_batch(limit=3).taken == 0
    assert len(queries) == 1


class LostFuture:
    def get(self, timeout=None):
        raise KafkaTimeoutError("no answer from the broker")


@pytest.mark.services
@pytest.mark.django_db
def test_a_broker_failure_mid_batch_leaves_that_row_and_the_later_ones_for_the_next_pass(queued, monkeypatch):
    real = client.producer()
    sends = itertools.count()

    class ThirdLost:
        def send(self, *args, **kwargs):
            return LostFuture() if next(sends) == 2 else real.send(*args, **kwargs)

        def flush(self, timeout=None):
            real.flush(timeout)

    monkeypatch.setattr(client, "producer", ThirdLost)
    done = outbox_relay_batch(limit=10)
    assert (done.taken, done.sent, done.failed) == (5, 2, True)
    rows = list(OutboxMessage.objects.order_by("pk").values_list("published_at", "attempts", "last_error"))
    assert [published is not None for published, _, _ in rows] == [True, True, False, False, False]
    assert [attempts for _, attempts, _ in rows] == [1, 1, 1, 0, 0]
    assert "KafkaTimeoutError" in rows[2][2]
    assert client._producer is None  # reset: the next pass connects again

    monkeypatch.undo()
    assert outbox_relay_batch(limit=10).sent == 3
    assert unpublished() == 0
    on_topic = order_ids_on_topic(queued)
    assert set(on_topic) == set(queued)
    assert on_topic[-3:] == queued[2:]  # the re-sent rows, in order, after the first pass's


@pytest.mark.services
@pytest.mark.django_db
def test_a_broker_that_does_not_answer_leaves_every_row_unpublished(queued, settings):
    settings.KAFKA = {
        **settings.KAFKA,
        "BOOTSTRAP_SERVERS": ["127.0.0.1:1"],
        "PRODUCER": {**settings.KAFKA["PRODUCER"], "max_block_ms": 300, "bootstrap_timeout_ms": 300},
        "PUBLISH_TIMEOUT": 0.3,
    }
    client.reset_producer()
    try:
        done = outbox_relay_batch(limit=10)
        assert (done.taken, done.sent) == (5, 0)
        assert unpublished() == 5
        first = OutboxMessage.objects.order_by("pk").first()
        assert (first.attempts, bool(first.last_error)) == (1, True)
    finally:
        client.reset_producer()


class Killed(BaseException):
    """The relay process dies here."""


@pytest.mark.services
@pytest.mark.django_db
def test_a_relay_killed_between_send_and_mark_sends_again_and_nothing_is_lost(queued, monkeypatch):
    send_batch = client.send_batch

    def send_then_die(messages, **kwargs):
        send_batch(messages, **kwargs)
        raise Killed

    monkeypatch.setattr(client, "send_batch", send_then_die)
    with pytest.raises(Killed):
        outbox_relay_batch(limit=10)
    assert unpublished() == 5
    assert order_ids_on_topic(queued) == queued  # the broker has them, the outbox does not know

    monkeypatch.undo()
    assert outbox_relay_batch(limit=10).sent == 5
    assert unpublished() == 0
    # Each command twice, in order both times; the engine drops the copies (duplicate order ids).
    assert order_ids_on_topic(queued) == queued + queued


# --- the relay process ----------------------------------------------------------------------------------


def run_in_thread(relay: Relay) -> threading.Thread:
    """The relay's loop as `run()` runs it, minus the signal handlers (a thread cannot set them)."""

    def loop() -> None:
        try:
            relay.setup()
            while not relay.stopping:
                relay.step()
        finally:
            relay.teardown(ready=True)
            connection.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def eventually(check, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.django_db
def test_a_second_relay_waits_for_the_first_instead_of_publishing_alongside_it():
    first, second = Relay(batch_size=10), Relay(batch_size=10)
    first.setup()
    try:
        assert first.active
        thread = run_in_thread(second)
        time.sleep(1.0)
        assert not second.active
        second.step()  # a relay without the lock publishes nothing, whatever calls it
        first.teardown(ready=True)  # the first one stops (or dies: its connection closes either way)
        assert eventually(lambda: second.active)
    finally:
        first.teardown(ready=True)
        second.stopping = True
        thread.join(10)
    assert not thread.is_alive()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_committed_row_is_published_within_a_few_polls(btc_usdt, settings):
    settings.OUTBOX_RETRY_SECONDS = 600  # no resend sweep: only the poll finds the row
    client.ensure_topics()
    relay = Relay(batch_size=10, poll_seconds=0.01)
    thread = run_in_thread(relay)
    try:
        assert eventually(lambda: relay.active)
        time.sleep(0.3)  # the relay's first pass found nothing; it polls now
        started = time.monotonic()
        outbox_add(CancelOrder(market="BTC_USDT", order_id=next(_ids), user_id=1, ts=0))
        assert eventually(lambda: unpublished() == 0)
        assert time.monotonic() - started < 1
    finally:
        relay.stopping = True
        thread.join(10)
    assert not thread.is_alive()


# --- orders the engine never answered ---------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.django_db
def test_a_pending_order_is_asked_for_again_with_a_growing_pause(order, settings):
    settings.OUTBOX_RETRY_SECONDS = 10
    OutboxMessage.objects.update(published_at=timezone.now())
    assert orders_resend_stale() == 0  # too young

    Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(seconds=11))
    assert orders_resend_stale() == 1
    assert last_command_for(order.pk)["type"] == "new"
    assert orders_resend_stale() == 0  # just resent

    Order.objects.filter(pk=order.pk).update(resent_at=timezone.now() - timedelta(seconds=15))
    assert orders_resend_stale() == 0  # the second pause is 20 s
    Order.objects.filter(pk=order.pk).update(resent_at=timezone.now() - timedelta(seconds=21))
    assert orders_resend_stale() == 1
    assert Order.objects.get(pk=order.pk).resends == 2


@pytest.mark.services
@pytest.mark.django_db
def test_an_order_the_engine_answered_is_not_sent_again(order, settings):
    settings.OUTBOX_RETRY_SECONDS = 1
    Order.objects.filter(pk=order.pk).update(status="open", created_at=timezone.now() - timedelta(minutes=5))
    assert orders_resend_stale() == 0


@pytest.mark.services
@pytest.mark.django_db
def test_a_cancel_the_engine_never_answered_is_sent_again(order, settings):
    settings.OUTBOX_RETRY_SECONDS = 1
    past = timezone.now() - timedelta(minutes=5)
    Order.objects.filter(pk=order.pk).update(status="open", cancel_requested_at=past, created_at=past)
    assert orders_resend_stale() == 1
    assert last_command_for(order.pk)["type"] == "cancel"


@pytest.mark.services
@pytest.mark.django_db(transaction=True)  # the loop closes the connection a test transaction would hold
def test_the_relay_loop_runs_the_resend_sweep(order, settings):
    settings.OUTBOX_RETRY_SECONDS = 1
    past = timezone.now() - timedelta(minutes=5)
    Order.objects.filter(pk=order.pk).update(created_at=past)
    relay = Relay(batch_size=10, poll_seconds=0.01)
    relay.setup()
    try:
        relay.step()
    finally:
        relay.teardown(ready=True)
    assert unpublished() == 0
    assert Order.objects.get(pk=order.pk).resends == 1


def engine_says(*, applied_ts: int = 0, caught_up_at: int | None = None, emitted: int = 5) -> None:
    """The state the matching worker publishes after each batch, as the resend sweep reads it."""
    cache.set(
        ENGINE_STATE_KEY,
        {
            "worker": "orders:0",
            "commands": 1,
            "sequences": {"BTC_USDT": emitted},
            "applied_ts": {"BTC_USDT": applied_ts},
            "caught_up_at": caught_up_at,
        },
        timeout=None,
    )


def settled_to(seq: int) -> None:
    SettlementCursor.objects.update_or_create(market="BTC_USDT", defaults={"seq": seq, "received_seq": seq})


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.mark.services
@pytest.mark.django_db
def test_an_order_the_engine_has_not_read_past_is_not_sent_again_however_old(order, settings):
    settings.OUTBOX_RETRY_SECONDS = 1
    created = timezone.now() - timedelta(minutes=5)
    Order.objects.filter(pk=order.pk).update(created_at=created)
    OutboxMessage.objects.update(published_at=timezone.now())
    settled_to(5)
    engine_says(applied_ts=int(created.timestamp() * 1000) + 500)  # behind: busy, not lost
    assert orders_resend_stale() == 0

    engine_says(applied_ts=int(created.timestamp() * 1000) + 500, caught_up_at=now_ms())  # idle since: lost
    assert orders_resend_stale() == 1
    assert last_command_for(order.pk)["type"] == "new"


@pytest.mark.services
@pytest.mark.django_db
def test_no_order_is_sent_again_while_settlement_is_behind_the_engine(order, settings):
    settings.OUTBOX_RETRY_SECONDS = 1
    Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    OutboxMessage.objects.update(published_at=timezone.now())
    engine_says(caught_up_at=now_ms(), emitted=5)
    settled_to(4)  # the engine may have answered it in event 5
    assert orders_resend_stale() == 0
    settled_to(5)
    assert orders_resend_stale() == 1


@pytest.mark.services
@pytest.mark.django_db
def test_no_order_is_sent_again_while_the_relay_is_behind(order, settings):
    settings.OUTBOX_RETRY_SECONDS = 1
    Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    OutboxMessage.objects.update(created_at=timezone.now() - timedelta(seconds=2))  # still unpublished
    assert orders_resend_stale() == 0


@pytest.mark.services
@pytest.mark.django_db
def test_the_copies_of_one_sweep_go_to_the_broker_as_one_batch(btc_usdt, make_user, fund, settings, monkeypatch):
    settings.OUTBOX_RETRY_SECONDS = 1
    client.ensure_topics()
    cache.delete(ENGINE_STATE_KEY)
    user = make_user()
    fund(user, "USDT", "10000")
    orders = [place(user, f"resend_batch_{n:06d}", "buy", "50000", "0.01") for n in range(3)]
    Order.objects.filter(pk__in=[o.pk for o in orders]).update(created_at=timezone.now() - timedelta(minutes=5))
    OutboxMessage.objects.update(published_at=timezone.now())
    batches = []
    send_batch = client.send_batch
    monkeypatch.setattr(client, "send_batch", lambda messages: batches.append(len(messages)) or send_batch(messages))
    assert orders_resend_stale() == 3
    assert batches == [3]
