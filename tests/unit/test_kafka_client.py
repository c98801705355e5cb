"""What every Kafka client the seam builds costs per message: the checksums in C, each key hashed
once, no sensors that nothing reads; and the partition each market goes to is still Kafka's own."""

import uuid

import crc32c
import pytest
from kafka import TopicPartition
from kafka.admin import NewTopic
from kafka.partitioner import DefaultPartitioner
from kafka.record import util

from core.kafka import client


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
