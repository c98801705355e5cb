"""The only place that builds Kafka clients. Settings come from `settings.KAFKA`."""

import contextlib
import functools
import os
import threading
import time
from collections.abc import Iterable, Sequence

import structlog
from django.conf import settings
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.partitioner import DefaultPartitioner
from kafka.partitioner.default import murmur2

from core.kafka import topics

log = structlog.get_logger(__name__)

_producer: KafkaProducer | None = None
_producer_pid: int | None = None
_producer_lock = threading.Lock()


def _connection(client_id: str) -> dict[str, object]:
    """What every client shares: where the brokers are, who this process is, how it authenticates."""
    return {
        "bootstrap_servers": settings.KAFKA["BOOTSTRAP_SERVERS"],
        "client_id": client_id,
        **settings.KAFKA["SECURITY"],
    }


@functools.lru_cache(maxsize=4096)
def _key_hash(key: bytes) -> int:
    return murmur2(key) & 0x7FFFFFFF


class KeyPartitioner(DefaultPartitioner):
    """Kafka's default choice of partition (murmur2 of the key, as the Java client and the broker's
    tools compute it), with each key's hash computed once: kafka-python computes murmur2 in pure
    Python on every send, and the exchange's keys are its markets, a handful of values."""

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        if serialized_key is None or topic not in cluster.topics():
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        partitions = sorted(cluster.partitions_for_topic(topic))
        return partitions[_key_hash(bytes(serialized_key)) % len(partitions)]


def producer_options() -> dict[str, object]:
    return {
        **_connection(f"exchange-{settings.EXCHANGE_PROCESS}"),
        "partitioner": KeyPartitioner(),
        **settings.KAFKA["PRODUCER"],
    }


def consumer_options(**overrides: object) -> dict[str, object]:
    return {**_connection(f"exchange-{settings.EXCHANGE_PROCESS}"), **settings.KAFKA["CONSUMER"], **overrides}


def admin_options() -> dict[str, object]:
    return {
        **_connection(f"exchange-{settings.EXCHANGE_PROCESS}-admin"),
        "request_timeout_ms": settings.KAFKA["PRODUCER"]["request_timeout_ms"],
        "bootstrap_timeout_ms": settings.KAFKA["PRODUCER"]["bootstrap_timeout_ms"],
    }


def producer() -> KafkaProducer:
    """One producer per process (it is thread-safe); a forked child builds its own."""
    global _producer, _producer_pid
    with _producer_lock:
        if _producer is None or _producer_pid != os.getpid():
            _producer = KafkaProducer(**producer_options())
            _producer_pid = os.getpid()
        return _producer


def reset_producer() -> None:
    """Drop the process's producer, e.g. after the broker went away, so the next send reconnects."""
    global _producer
    with _producer_lock:
        if _producer is not None and _producer_pid == os.getpid():
            try:
                _producer.close(timeout=1)
            except Exception:
                log.warning("kafka_producer_close_failed", exc_info=True)
        _producer = None


def send(topic: str, key: str, value: bytes, *, timeout: float | None = None) -> None:
    """Send one message and wait until the broker acknowledged it."""
    future = producer().send(topics.name(topic), key=key.encode(), value=value)
    future.get(timeout=timeout if timeout is not None else settings.KAFKA["PUBLISH_TIMEOUT"])


def send_batch(
    messages: Sequence[tuple[str, str, bytes]], *, timeout: float | None = None
) -> tuple[int, Exception | None]:
    """Send `messages` (topic, key, value) together and wait for the broker's answers.

    Returns how many of them, from the first on, the broker acknowledged, and the error of the first
    one it did not (None when all were). Messages after a failed one may have been written too; the
    caller treats them as not sent, and sends them again.
    """
    wait = timeout if timeout is not None else settings.KAFKA["PUBLISH_TIMEOUT"]
    futures, error = [], None
    try:
        kafka = producer()
        for topic, key, value in messages:
            futures.append(kafka.send(topics.name(topic), key=key.encode(), value=value))
    except Exception as exc:  # noqa: BLE001 - no broker, or no metadata within max_block_ms: the rest is not sent
        error = exc
    if not futures:
        return 0, error
    deadline = time.monotonic() + wait
    with contextlib.suppress(Exception):  # a future that is still open below says why
        kafka.flush(timeout=wait)
    for done, future in enumerate(futures):
        try:
            future.get(timeout=max(deadline - time.monotonic(), 0.001))
        except Exception as exc:  # noqa: BLE001 - the caller decides what a failure means
            return done, exc
    return len(futures), error


def consumer(**overrides: object) -> KafkaConsumer:
    """A consumer with no group: callers assign partitions and seek to offsets they stored."""
    return KafkaConsumer(**consumer_options(**overrides))


class Poller:
    """Reads batches from a consumer without burning a core while there is nothing to read.

    Two ways, chosen by `KAFKA_POLL_WAIT_MS` (settings.KAFKA["POLL_WAIT_MS"]):

    - 0 (outside production): poll without blocking and sleep between empty polls, 5 ms doubling to
      50 ms. kafka-python's blocking `poll(timeout_ms=...)` spins on a broker that answers empty
      fetches at once instead of holding them for `fetch_max_wait_ms`, as the development broker
      does (`make bench-poll`: about 0.9 of a core for one idle consumer). A message that arrives
      while the worker sleeps waits up to that long, and for the poll after next.
    - above 0 (100 in production): block in `poll` for up to that many milliseconds, for a broker
      that holds an empty fetch until a message comes or `fetch_max_wait_ms` passes, as Kafka does:
      the worker has a message as soon as the broker answers, and an idle worker costs almost
      nothing. Each return of `poll` lets the worker do its housekeeping (snapshots, shutdown), so
      the wait bounds how late that can be.
    """

    _FIRST_PAUSE, _LONGEST_PAUSE = 0.005, 0.05

    def __init__(self, consumer: KafkaConsumer, *, max_records: int, wait_ms: int | None = None) -> None:
        self.consumer = consumer
        self.max_records = max_records
        self.wait_ms = settings.KAFKA["POLL_WAIT_MS"] if wait_ms is None else wait_ms
        self._pause = self._FIRST_PAUSE

    def poll(self) -> dict:
        if self.wait_ms:
            return self.consumer.poll(timeout_ms=self.wait_ms, max_records=self.max_records)
        batch = self.consumer.poll(timeout_ms=0, max_records=self.max_records)
        if batch:
            self._pause = self._FIRST_PAUSE
            return batch
        time.sleep(self._pause)
        self._pause = min(self._pause * 2, self._LONGEST_PAUSE)
        return {}


def partitions_of(topic: str, only: Iterable[int] = ()) -> list[TopicPartition]:
    wanted = sorted(set(only)) or list(range(topics.partitions(topic)))
    return [TopicPartition(topics.name(topic), p) for p in wanted]


def first_offsets(consumer: KafkaConsumer, topic: str, only: Iterable[int] = ()) -> dict[int, int]:
    """The first offset the broker still holds, per partition of `topic`."""
    return {tp.partition: o for tp, o in consumer.beginning_offsets(partitions_of(topic, only)).items()}


def end_offsets(consumer: KafkaConsumer, topic: str, only: Iterable[int] = ()) -> dict[int, int]:
    """The offset the next message will get, per partition of `topic`."""
    return {tp.partition: o for tp, o in consumer.end_offsets(partitions_of(topic, only)).items()}


def admin() -> KafkaAdminClient:
    return KafkaAdminClient(**admin_options())


def ensure_topics() -> dict[str, int]:
    """Create every topic with its configured partition count; grow any that has fewer.

    Brokers auto-create unknown topics with one partition, which would silently put every market
    in one partition, so topics are always created explicitly before anything is produced. With
    `KAFKA_RETENTION_MS` set, each topic is created with that retention, and one created with
    another gets it.
    """
    retention = settings.KAFKA["RETENTION_MS"]
    configs = {} if retention is None else {"retention.ms": str(retention)}
    client = admin()
    try:
        wanted = {topics.name(t): topics.partitions(t) for t in topics.ALL}
        existing = set(client.list_topics())
        missing = [
            NewTopic(name, count, settings.KAFKA["REPLICATION_FACTOR"], topic_configs=configs)
            for name, count in wanted.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                client.create_topics(missing)
        found: dict[str, int] = {}
        for description in client.describe_topics(list(wanted)):
            found[description.get("topic") or description["name"]] = len(description["partitions"])
        grow = {name: NewPartitions(count) for name, count in wanted.items() if found.get(name, 0) < count}
        if grow:
            client.create_partitions(grow)
            found.update({name: wanted[name] for name in grow})
        if configs:
            _configs_align(client, list(wanted), configs)
        return found
    finally:
        client.close()


def topic_configs(client: KafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's configuration as the broker reports it, name → value."""
    answer = client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    return {
        name: {key: entry["value"] for key, entry in values.items()} for name, values in answer.get("topic", {}).items()
    }


def _configs_align(client: KafkaAdminClient, names: list[str], configs: dict[str, str]) -> None:
    current = topic_configs(client, names)
    stale = [name for name in names if any(current.get(name, {}).get(k) != v for k, v in configs.items())]
    if not stale:
        return
    # kafka-python alters incrementally, or keeps the topic's other settings on an older broker.
    answer = client.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=configs) for name in stale])
    refused = {name: result for name, result in answer.get("topic", {}).items() if result != "OK"}
    if refused:
        # The topic keeps the retention it has: nothing here depends on a shorter one.
        log.error("kafka_topic_configs_refused", refused=refused, configs=configs)
    else:
        log.info("kafka_topic_configs_altered", topics=stale, configs=configs)


def delete_topics(names: Iterable[str]) -> None:
    client = admin()
    try:
        client.delete_topics(list(names))
    finally:
        client.close()
