"""The settlement consumer: engine events from Kafka into the inbox, then Celery settles them.

Its Kafka position is stored in PostgreSQL in the same transaction as the inbox rows, so it resumes
exactly where the database says, whatever the broker or Redis remember. Every batch it stores gets a
Celery task per market it touched, enqueued after commit; the beat sweep covers any task Redis loses.
"""

import structlog
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections
from kafka import TopicPartition

from core.kafka import client, topics
from core.worker import LoopWorker
from settlement.selectors import consumer_offsets
from settlement.services import ReceivedMessage, events_ingest
from settlement.tasks import settle_market_soon

log = structlog.get_logger(__name__)


class Consumer(LoopWorker):
    name = "settlement_consumer"

    def __init__(self, *, partitions: list[int]) -> None:
        super().__init__()
        self.topic = topics.name(topics.ENGINE_EVENTS)
        self.partitions = [tp.partition for tp in client.partitions_of(topics.ENGINE_EVENTS, partitions)]
        self.kafka = None

    def connect(self) -> None:
        if self.kafka is not None:
            self.kafka.close()
            self.kafka = None
        offsets = consumer_offsets(topic=self.topic)
        self.kafka = client.consumer(auto_offset_reset="earliest")
        assigned = [TopicPartition(self.topic, p) for p in self.partitions]
        self.kafka.assign(assigned)
        for tp in assigned:
            self.kafka.seek(tp, offsets.get(tp.partition, 0))
        self.poller = client.Poller(self.kafka, max_records=settings.KAFKA["CONSUMER"]["max_poll_records"])
        log.info("settlement_consumer_positioned", offsets=offsets)

    def poll(self) -> list[ReceivedMessage]:
        """The next batch from Kafka (at most `max_poll_records`), as the inbox takes it; empty
        after a short sleep when there is nothing to read."""
        return [
            ReceivedMessage(partition=tp.partition, offset=record.offset, value=record.value)
            for tp, records in self.poller.poll().items()
            for record in records
        ]

    def run_batch(self) -> int:
        messages = self.poll()
        if not messages:
            return 0
        close_old_connections()
        touched = events_ingest(topic=self.topic, messages=messages)
        for market in sorted(touched):
            try:
                settle_market_soon(market)
            except Exception:
                log.warning("settle_enqueue_failed", market=market, exc_info=True)
        return len(messages)

    def setup(self) -> None:
        client.ensure_topics()
        self.connect()

    def step(self) -> None:
        self.run_batch()

    def teardown(self, *, ready: bool) -> None:
        if self.kafka is not None:
            self.kafka.close()


class Command(BaseCommand):
    help = "Consume engine events from Kafka into the settlement inbox and hand them to Celery."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--partitions",
            type=lambda s: [int(p) for p in s.split(",") if p],
            default=[],
            help="Comma-separated partitions of the engine-events topic to own (default: all).",
        )

    def handle(self, *args: object, **options: object) -> None:
        consumer = Consumer(partitions=options["partitions"])
        consumer.run()
