"""What a consumer's poll costs on the running broker, and how soon it hands over a message.

    make up
    .venv/bin/python benchmarks/kafka_poll.py
    .venv/bin/python benchmarks/kafka_poll.py --messages 40 --idle-seconds 5

The matching worker and the settlement consumer wait for messages through `core.kafka.client.Poller`:
without blocking, sleeping between empty polls (KAFKA_POLL_WAIT_MS 0, the development broker), or
blocking in `poll` (above 0, a Kafka cluster). This measures both ways on the broker of
KAFKA_BOOTSTRAP_SERVERS, with the exchange's own consumer settings and topics of its own
(KAFKA_TOPIC_PREFIX followed by bench-poll-<random>, deleted at the end):

- the CPU of one consumer waiting on an empty topic, for a blocking `poll(timeout_ms=500)` at each
  `fetch_max_wait_ms` asked (a Kafka cluster holds an empty fetch that long; a broker that answers
  at once makes kafka-python send the next fetch at once), and for the Poller;
- how long after the broker acknowledged a message the consumer had it: blocking, and the Poller;
- with messages flowing, as they do to the workers under load (`--rate` a second from another
  process, over a topic with as many partitions as the orders topic): the consumer's CPU, how many
  polls it made, and how long each message took from its send to the poll that returned it.

Prints two Markdown tables.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import struct
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
from load import percentile  # noqa: E402 - benchmarks/load.py, beside this script

from core.kafka import client, topics  # noqa: E402


def consumer(topic: str, partitions: int = 1, **overrides: object) -> KafkaConsumer:
    """A consumer of the topic's partitions, at their end, with the exchange's settings."""
    found = client.consumer(**overrides)
    found.assign([TopicPartition(topic, p) for p in range(partitions)])
    found.seek_to_end()
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


def send_at(topic: str, rate: float, seconds: float) -> None:
    """Send a message stamped with its send time `rate` times a second, keys spread over the partitions."""
    producer = KafkaProducer(**client.producer_options())
    started, sent = time.time(), 0
    while (now := time.time()) - started < seconds:
        producer.send(topic, key=f"M{sent % 7}".encode(), value=struct.pack("d", now))
        sent += 1
        time.sleep(max(started + sent / rate - time.time(), 0))
    producer.flush(timeout=10)
    producer.close()


def flow(topic: str, partitions: int, rate: float, seconds: float, poll) -> tuple[float, int, list[float]]:
    """Cores the consumer used, polls it made and each message's milliseconds from send to `poll()`
    while another process sends `rate` messages a second for `seconds`."""
    sender = multiprocessing.get_context("fork").Process(target=send_at, args=(topic, rate, seconds))
    delays, polls = [], 0
    cpu, started = time.process_time(), time.time()
    sender.start()
    while time.time() - started < seconds + 0.5:
        batch = poll()
        polls += 1
        now = time.time()
        delays.extend((now - struct.unpack("d", r.value)[0]) * 1000 for records in batch.values() for r in records)
    sender.join()
    return (time.process_time() - cpu) / (time.time() - started), polls, delays


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=40, help="messages timed for each way of polling")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="how long each idle consumer is timed")
    parser.add_argument("--waits", default="5,50,500", help="fetch_max_wait_ms values for the blocking poll")
    parser.add_argument("--rate", type=float, default=200.0, help="messages a second in the flow")
    parser.add_argument("--flow-seconds", type=float, default=8.0, help="how long each way of polling is fed")
    args = parser.parse_args()

    topic = topics.name(f"bench-poll-{uuid.uuid4().hex[:8]}")
    admin = client.admin()
    flowing = f"{topic}-flow"
    partitions = topics.partitions(topics.ORDERS)
    admin.create_topics([NewTopic(topic, 1, 1), NewTopic(flowing, partitions, 1)])
    producer = KafkaProducer(**client.producer_options())
    rows, flows = [], []
    try:
        for wait in (int(value) for value in args.waits.split(",")):
            blocking = consumer(topic, fetch_max_wait_ms=wait)
            cores, polls = idle_cpu(args.idle_seconds, lambda c=blocking: c.poll(timeout_ms=500))
            waits = handover(producer, topic, args.messages, lambda c=blocking: c.poll(timeout_ms=500))
            rows.append((f"blocking `poll(timeout_ms=500)`, fetch_max_wait_ms {wait}", cores, polls, waits))
            blocking.close()
            fed = client.Poller(consumer(flowing, partitions, fetch_max_wait_ms=wait), max_records=500, wait_ms=100)
            measured = flow(flowing, partitions, args.rate, args.flow_seconds, fed.poll)
            flows.append((f"blocking `poll(timeout_ms=100)`, fetch_max_wait_ms {wait}", *measured))
            fed.consumer.close()
        plain = consumer(topic)
        poller = client.Poller(plain, max_records=500, wait_ms=0)
        cores, polls = idle_cpu(args.idle_seconds, poller.poll)
        waits = handover(producer, topic, args.messages, poller.poll)
        rows.append(("`Poller` (no wait, then 5 ms doubling to 50 ms)", cores, polls, waits))
        plain.close()
        fed = client.Poller(consumer(flowing, partitions), max_records=500, wait_ms=0)
        flows.append(("`Poller`", *flow(flowing, partitions, args.rate, args.flow_seconds, fed.poll)))
        fed.consumer.close()
    finally:
        producer.close()
        admin.delete_topics([topic, flowing])
        admin.close()

    print(f"| way of polling | idle: cores | idle: polls in {args.idle_seconds:g} s | handover p50 / max, ms |")
    print("| --- | --- | --- | --- |")
    for label, cores, polls, waits in rows:
        print(f"| {label} | {cores:.2f} | {polls:,} | {statistics.median(waits):.1f} / {max(waits):.1f} |")
    print()
    print(
        f"| way of polling, {args.rate:g} messages/s over {partitions} partitions | cores | polls a second "
        "| messages | send → poll p50 / p99, ms |"
    )
    print("| --- | --- | --- | --- | --- |")
    for label, cores, polls, delays in flows:
        print(
            f"| {label} | {cores:.2f} | {polls / (args.flow_seconds + 0.5):,.0f} | {len(delays):,} "
            f"| {percentile(delays, 0.5):.1f} / {percentile(delays, 0.99):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
