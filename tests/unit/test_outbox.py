"""The outbox against the real broker: what is acknowledged is marked, what is not stays for the
relay, and orders the engine never answered are asked for again, less and less often."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.kafka import client, topics
from matching import schemas
from matching.models import Order, OutboxMessage
from matching.services import orders_resend_stale, outbox_publish, outbox_relay
from tests.unit.conftest import place

pytestmark = [pytest.mark.django_db, pytest.mark.services]


@pytest.fixture
def order(btc_usdt, make_user, fund) -> Order:
    client.ensure_topics()
    user = make_user()
    fund(user, "USDT", "1000")
    return place(user, "outbox", "buy", "50000", "0.01")


def orders_topic_end() -> int:
    consumer = client.consumer()
    try:
        partitions = client.partitions_of(topics.ORDERS)
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def last_command_for(order_id: int) -> dict:
    consumer = client.consumer(auto_offset_reset="earliest", consumer_timeout_ms=2000)
    try:
        consumer.assign(client.partitions_of(topics.ORDERS))
        consumer.seek_to_beginning()
        found = [schemas.decode_command(r.value) for r in consumer]
    finally:
        consumer.close()
    return [c.to_dict() for c in found if getattr(c, "order_id", None) == order_id][-1]


def test_an_acknowledged_command_is_marked_published(order):
    message = OutboxMessage.objects.get()
    before = orders_topic_end()
    assert outbox_publish(ids=[message.pk]) == 1
    message.refresh_from_db()
    assert message.published_at is not None
    assert orders_topic_end() == before + 1
    assert last_command_for(order.pk)["type"] == "new"
    # Publishing the same row again sends nothing.
    assert outbox_publish(ids=[message.pk]) == 0


def test_a_broker_that_does_not_answer_leaves_the_row_to_the_relay(order, settings):
    settings.KAFKA = {
        **settings.KAFKA,
        "BOOTSTRAP_SERVERS": ["127.0.0.1:1"],
        "PRODUCER": {**settings.KAFKA["PRODUCER"], "max_block_ms": 300, "bootstrap_timeout_ms": 300},
        "PUBLISH_TIMEOUT": 0.3,
    }
    client.reset_producer()
    try:
        message = OutboxMessage.objects.get()
        assert outbox_publish(ids=[message.pk]) == 0
        message.refresh_from_db()
        assert (message.published_at, message.attempts) == (None, 1)
        assert message.last_error
    finally:
        client.reset_producer()


def test_the_relay_publishes_what_the_after_commit_hook_missed(order):
    OutboxMessage.objects.update(created_at=timezone.now() - timedelta(seconds=10))
    assert outbox_relay() >= 1
    assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()


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


def test_an_order_the_engine_answered_is_not_sent_again(order, settings):
    settings.OUTBOX_RETRY_SECONDS = 1
    Order.objects.filter(pk=order.pk).update(status="open", created_at=timezone.now() - timedelta(minutes=5))
    assert orders_resend_stale() == 0


def test_a_cancel_the_engine_never_answered_is_sent_again(order, settings):
    settings.OUTBOX_RETRY_SECONDS = 1
    past = timezone.now() - timedelta(minutes=5)
    Order.objects.filter(pk=order.pk).update(status="open", cancel_requested_at=past, created_at=past)
    assert orders_resend_stale() == 1
    assert last_command_for(order.pk)["type"] == "cancel"
