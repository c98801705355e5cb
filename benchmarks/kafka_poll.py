"""What a consumer's poll costs on the running broker, and how soon it hands over a message.

    make up
    .venv/bin/python benchmarks/kafka_poll.py
    .venv/bin/python benchmarks/kafka_poll.py --messages 40 --idle-seconds 5

The matching worker and the settlement consumer poll without blocking and sleep between empty polls
(`core.kafka.client.Poller`). This measures why, on the broker of KAFKA_BOOTSTRAP_SERVERS, with the
exchange's own consumer settings and a topic of its own (KAFKA_TOPIC_PREFIX followed by
bench-poll-<random>, deleted at the end):

- the CPU of one consumer waiting on an empty topic, for a blocking `poll(timeout_ms=500)` at each
  `fetch_max_wait_ms` asked (a Kafka cluster holds an empty fetch that long; a broker that answers
  at once makes kafka-python send the next fetch at once), and for the Poller;
- how long after the broker acknowledged a message the consumer had it: blocking, and the Poller.

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

import django

django.setup()

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from core.kafka import client, topics  # noqa: E402


def consumer(topic: str, **overrides: object) -> KafkaConsumer:
    """A consumer of the topic's one partition, at its end, with the exchange's settings."""
    found = client.consumer(**overrides)
    partition = TopicPartition(topic, 0)
    found.assign([partition])
    found.seek_to_end(partition)
    found.poll(timeout_ms=0)
    return found


def idle_cpu(seconds: float, poll) -> tuple[float, int]:
    """Cores used and polls made while `poll()` waits on an empty topic for `seconds`."""
    cpu, started, polls = time.process_time(), time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        poll()
        polls += 1
    return (time.process_time() - cpu) / (time.perf_counter() - started), polls


def handover(producer: KafkaProducer, topic: str, messages: int, poll) -> list[float]:
    """Milliseconds from the broker's acknowledgement of each message to `poll()` returning it."""
    waits = []
    for index in range(messages):
        time.sleep(0.02 + (index % 7) * 0.004)  # not in step with the Poller's pauses
        producer.send(topic, b"probe").get(timeout=10)
        acknowledged = time.perf_counter()
        while not poll():
            pass
        waits.append((time.perf_counter() - acknowledged) * 1000)
    return waits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=40, help="messages timed for each way of polling")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="how long each idle consumer is timed")
    parser.add_argument("--waits", default="5,50,500", help="fetch_max_wait_ms values for the blocking poll")
    args = parser.parse_args()

    topic = topics.name(f"bench-poll-{uuid.uuid4().hex[:8]}")
    admin = client.admin()
    admin.create_topics([NewTopic(topic, 1, 1)])
    producer = KafkaProducer(**client.producer_options())
    rows = []
    try:
        for wait in (int(value) for value in args.waits.split(",")):
            blocking = consumer(topic, fetch_max_wait_ms=wait)
            cores, polls = idle_cpu(args.idle_seconds, lambda c=blocking: c.poll(timeout_ms=500))
            waits = handover(producer, topic, args.messages, lambda c=blocking: c.poll(timeout_ms=500))
            rows.append((f"blocking `poll(timeout_ms=500)`, fetch_max_wait_ms {wait}", cores, polls, waits))
            blocking.close()
        plain = consumer(topic)
        poller = client.Poller(plain, max_records=500)
        cores, polls = idle_cpu(args.idle_seconds, poller.poll)
        waits = handover(producer, topic, args.messages, poller.poll)
        rows.append(("`Poller` (no wait, then 5 ms doubling to 50 ms)", cores, polls, waits))
        plain.close()
    finally:
        producer.close()
        admin.delete_topics([topic])
        admin.close()

    print(f"| way of polling | idle: cores | idle: polls in {args.idle_seconds:g} s | handover p50 / max, ms |")
    print("| --- | --- | --- | --- |")
    for label, cores, polls, waits in rows:
        print(f"| {label} | {cores:.2f} | {polls:,} | {statistics.median(waits):.1f} / {max(waits):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
