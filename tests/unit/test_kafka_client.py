"""What every Kafka client the seam builds costs per message: the checksums in C, each key hashed
once, no sensors that nothing reads; and the partition each market goes to is still Kafka's own."""

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import crc32c
import pytest
from kafka import TopicPartition
from kafka.admin import NewTopic
from kafka.partitioner import DefaultPartitioner
from kafka.record import util

from core.kafka import client, topics

ROOT = Path(__file__).resolve().parents[2]


def test_record_checksums_are_computed_by_the_compiled_crc32c():
    # kafka-python falls back to a pure-Python CRC-32C when the `crc32c` package is missing: it
    # runs on every record batch produced and every one fetched.
    assert util._crc32c is crc32c.crc32c


def test_clients_are_built_without_kafka_pythons_own_sensors():
    assert client.producer_options()["metrics_enabled"] is False
    assert client.consumer_options()["metrics_enabled"] is False


@pytest.fixture
def topic():
    name = f"partitioner-{uuid.uuid4().hex[:8]}"
    admin = client.admin()
    admin.create_topics([NewTopic(name, 5, 1)])
    yield name
    admin.delete_topics([name])
    admin.close()


@pytest.mark.services
def test_each_key_goes_to_the_partition_kafkas_default_partitioner_chooses(topic):
    producer = client.producer()
    keys = [f"MARKET{i}_USDT".encode() for i in range(40)]
    sent = {key: producer.send(topic, key=key, value=b"x") for key in keys}
    producer.flush(timeout=10)
    chosen = {key: future.get(timeout=10).partition for key, future in sent.items()}

    default = DefaultPartitioner()
    expected = {key: default.partition(topic, None, key, None, b"x", producer._metadata) for key in keys}
    assert chosen == expected
    assert len(set(chosen.values())) > 1

    consumer = client.consumer(auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(topic, p) for p in range(5)])
    received = {record.key: record.partition for record in consumer}
    consumer.close()
    assert received == chosen


@pytest.mark.services
def test_a_key_is_hashed_once_however_many_messages_carry_it(topic, monkeypatch):
    hashed = []

    def counting(data: bytes) -> int:
        hashed.append(bytes(data))
        return real(data)

    real = client.murmur2
    monkeypatch.setattr(client, "murmur2", counting)
    client._key_hash.cache_clear()
    producer = client.producer()
    for _ in range(50):
        producer.send(topic, key=b"BTC_USDT", value=b"x")
        producer.send(topic, key=b"ETH_USDT", value=b"x")
    producer.flush(timeout=10)
    assert sorted(hashed) == [b"BTC_USDT", b"ETH_USDT"]


@pytest.fixture
def own_topics(settings):
    """The project's topics under a prefix of their own, deleted afterwards."""
    settings.KAFKA = {**settings.KAFKA, "TOPIC_PREFIX": f"retention-{uuid.uuid4().hex[:8]}-"}
    yield [topics.name(t) for t in topics.ALL]
    client.delete_topics([topics.name(t) for t in topics.ALL])


def retention(names: list[str]) -> dict[str, str | None]:
    admin = client.admin()
    try:
        return {name: values.get("retention.ms") for name, values in client.topic_configs(admin, names).items()}
    finally:
        admin.close()


@pytest.mark.services
def test_topics_are_created_with_the_retention_set_and_follow_a_new_one(settings, own_topics):
    settings.KAFKA = {**settings.KAFKA, "RETENTION_MS": 600_000}
    client.ensure_topics()
    assert retention(own_topics) == dict.fromkeys(own_topics, "600000")

    settings.KAFKA = {**settings.KAFKA, "RETENTION_MS": 900_000}
    client.ensure_topics()
    assert retention(own_topics) == dict.fromkeys(own_topics, "900000")

    # Unset (production's default): the topics keep whatever the cluster's operators gave them.
    settings.KAFKA = {**settings.KAFKA, "RETENTION_MS": None}
    client.ensure_topics()
    assert retention(own_topics) == dict.fromkeys(own_topics, "900000")


def settings_of(env: dict[str, str | None]) -> subprocess.CompletedProcess:
    """Load the settings in a process of their own, with `env` over the test's environment (None:
    unset)."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "exchange.settings", **env}
    return subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.KAFKA['RETENTION_MS'])"],
        cwd=ROOT,
        env={name: value for name, value in env.items() if value is not None},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("retention", "snapshots", "refused"),
    [("60000", "30", True), ("299999", "30", True), ("300000", "30", False), ("1000000", "600", True)],
)
def test_a_retention_shorter_than_the_engines_replay_needs_refuses_to_start(retention, snapshots, refused):
    done = settings_of({"KAFKA_RETENTION_MS": retention, "ENGINE_SNAPSHOT_SECONDS": snapshots})
    assert (done.returncode != 0) is refused, done.stderr[-2000:]
    assert ("KAFKA_RETENTION_MS must be at least" in done.stderr) is refused


def test_developments_retention_is_an_hour_or_ten_snapshot_intervals():
    for snapshots, retention in (("30", "3600000"), ("3600", "36000000")):
        done = settings_of({"ENGINE_SNAPSHOT_SECONDS": snapshots, "KAFKA_RETENTION_MS": None})
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split()[-1] == retention


def at_end(topic: str, partitions: int):
    consumer = client.consumer()
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    consumer.seek_to_end()
    consumer.poll(timeout_ms=0)
    return consumer


def polls_asked(consumer, monkeypatch) -> list[int]:
    """The `timeout_ms` of each `poll` the consumer is asked for, from now on."""
    asked, poll = [], consumer.poll

    def recording(*, timeout_ms: int, max_records: int) -> dict:
        asked.append(timeout_ms)
        return poll(timeout_ms=timeout_ms, max_records=max_records)

    monkeypatch.setattr(consumer, "poll", recording)
    return asked


@pytest.mark.services
def test_a_blocking_poller_hands_over_a_message_sent_while_it_waits(topic, monkeypatch):
    consumer = at_end(topic, 5)
    asked = polls_asked(consumer, monkeypatch)
    poller = client.Poller(consumer, max_records=10, wait_ms=5000)
    sender = threading.Timer(0.3, lambda: client.producer().send(topic, key=b"BTC_USDT", value=b"late").get(10))
    sender.start()
    started = time.monotonic()
    try:
        batch = poller.poll()
    finally:
        sender.join()
        consumer.close()
    assert [record.value for records in batch.values() for record in records] == [b"late"]
    assert 0.25 < time.monotonic() - started < 4
    assert asked == [5000]  # one poll that waited for the message, no sleeping of the Poller's own


@pytest.mark.services
def test_a_blocking_poller_comes_back_empty_after_its_wait(topic, monkeypatch):
    consumer = at_end(topic, 5)
    asked = polls_asked(consumer, monkeypatch)
    started = time.monotonic()
    try:
        assert client.Poller(consumer, max_records=10, wait_ms=300).poll() == {}
    finally:
        consumer.close()
    assert 0.25 < time.monotonic() - started < 3
    assert asked == [300]


@pytest.mark.services
def test_a_sleeping_poller_pauses_longer_while_empty_and_not_after_a_message(topic, monkeypatch):
    consumer = at_end(topic, 5)
    pauses = []
    monkeypatch.setattr(client.time, "sleep", pauses.append)
    poller = client.Poller(consumer, max_records=10, wait_ms=0)
    try:
        for _ in range(6):
            assert poller.poll() == {}
        client.producer().send(topic, key=b"BTC_USDT", value=b"x").get(10)
        deadline = time.monotonic() + 10
        while not (batch := poller.poll()) and time.monotonic() < deadline:
            pass
        assert batch
        poller.poll()
    finally:
        consumer.close()
    assert pauses[:6] == [0.005, 0.01, 0.02, 0.04, 0.05, 0.05]
    assert pauses[-1] == 0.005  # the first empty poll after a message pauses the shortest time again
