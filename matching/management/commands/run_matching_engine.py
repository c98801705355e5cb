"""The matching worker: Kafka `orders` in, the pure engine in the middle, Kafka `engine-events` out.

It owns a set of partitions of the orders topic (all of them unless ENGINE_PARTITIONS or
--partitions says otherwise). Its position is the snapshot it last wrote to PostgreSQL, never the
broker's memory: on start it restores the latest snapshot and replays the input from the offsets
stored with it. The engine is deterministic, so the events it emits again are identical (same
sequence numbers, same hashes) and settlement drops them as duplicates.
"""

import time

import structlog
from django.conf import settings
from django.core.cache import cache
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections
from kafka import TopicPartition

from core.api import decimal_str
from core.errors import ExchangeError
from core.kafka import client, topics
from core.worker import LoopWorker
from matching import schemas
from matching.engine import Engine
from matching.models import EngineSnapshot, Market
from matching.progress import settlement_progress
from matching.selectors import ENGINE_STATE_KEY, depth_cache_key
from matching.services import engine_rewind, engine_snapshot_rewound, engine_snapshot_save

log = structlog.get_logger(__name__)

# How often the worker looks for a rewind (`manage.py engine_rewind`) and for lost events.
_REWIND_CHECK_SECONDS = 1.0
# A lost event is asked for again (by rewinding) at most this often.
_ASK_AGAIN_SECONDS = 60.0


class SendFailed(Exception):
    """The broker did not acknowledge every event of a batch."""


# How often an idle worker says so (`caught_up_at` in its published state).
_IDLE_PUBLISH_SECONDS = 0.5


class Worker(LoopWorker):
    name = "engine"

    def __init__(
        self, *, partitions: list[int], snapshot_seconds: float, snapshot_commands: int, gap_rewind_seconds: float
    ) -> None:
        super().__init__()
        self.gap_rewind_seconds = gap_rewind_seconds
        # market -> (settled sequence, since when it has not moved, the events topic's ends then);
        # (market, seq) -> when a lost event may be asked for again
        self.stalled: dict[str, tuple[int, float, dict[int, int]]] = {}
        self.asked: dict[tuple[str, int], float] = {}
        self.partitions = [tp.partition for tp in client.partitions_of(topics.ORDERS, partitions)]
        self.worker_id = "orders:" + ",".join(str(p) for p in self.partitions)
        self.snapshot_seconds = snapshot_seconds
        self.snapshot_commands = snapshot_commands
        self.engine = Engine()
        self.offsets: dict[int, int] = {}
        self.commands = 0
        self.commands_at_snapshot = 0
        self.snapshot_at = self.rewind_checked_at = time.monotonic()
        self.snapshot_id = 0
        self.markets: dict[str, Market] = {}
        self.consumer = None
        # What the relay's resend sweep needs to tell a lost command from one not yet read: per
        # market, the newest command time applied (ms), and the last time a poll found the input
        # read to its end.
        self.applied_ts: dict[str, int] = {}
        self.caught_up_at: int | None = None
        self.idle_published_at = 0.0

    # --- state ------------------------------------------------------------------------------------

    def restore(self) -> None:
        snapshot = EngineSnapshot.objects.filter(worker=self.worker_id).order_by("-id").first()
        if snapshot is None:
            self.engine, self.offsets, self.commands, self.snapshot_id = Engine(), {}, 0, 0
            log.info("engine_start_empty", worker=self.worker_id)
        else:
            self.engine = Engine.restore(bytes(snapshot.data))
            self.offsets = {int(p): int(o) for p, o in snapshot.offsets.items()}
            self.commands = snapshot.commands
            self.snapshot_id = snapshot.pk
            log.info("engine_restored", worker=self.worker_id, snapshot=snapshot.pk, offsets=self.offsets)
        self.commands_at_snapshot = self.commands
        self.snapshot_at = self.rewind_checked_at = time.monotonic()

    def snapshot(self) -> bool:
        """Store the books; False (and nothing stored) when an operator has rewound this worker."""
        saved = engine_snapshot_save(
            worker=self.worker_id,
            offsets=self.offsets,
            commands=self.commands,
            sequences=self.engine.sequences(),
            data=self.engine.snapshot(),
            since=self.snapshot_id,
            settled=self.settled(),
        )
        if saved is None:
            return False
        self.snapshot_id = saved.pk
        self.commands_at_snapshot = self.commands
        self.snapshot_at = time.monotonic()
        log.info("engine_snapshot", snapshot=saved.pk, commands=self.commands, bytes=len(saved.data))
        return True

    def settled(self) -> dict[str, int]:
        """Each market's last sequence number that settlement has applied."""
        return settlement_progress().settled_sequences(markets=self.engine.markets)

    def lost_event(self) -> tuple[str, int] | None:
        """An event this worker emitted that never reached settlement: the broker lost it.

        A market whose settled sequence is behind the engine's is watched: when it has not moved for
        ENGINE_GAP_REWIND_SECONDS, the settlement consumer has read past everything the events topic
        held when the wait began (so the event, emitted before that, would have been read), and
        settlement's inbox still lacks the next event, that event was lost after the broker had
        acknowledged it. A consumer that is down or behind never looks like that. The same event is
        asked for again at most once a minute.
        """
        now = time.monotonic()
        settled = self.settled()
        events_topic = topics.name(topics.ENGINE_EVENTS)
        ends: dict[int, int] | None = None
        for market, emitted in self.engine.sequences().items():
            seq = settled.get(market, 0)
            if seq >= emitted:
                self.stalled.pop(market, None)
                continue
            if market not in self.stalled or self.stalled[market][0] != seq:
                if ends is None:
                    ends = client.end_offsets(self.consumer, topics.ENGINE_EVENTS)
                self.stalled[market] = (seq, now, ends)
                continue
            _, since, ends_then = self.stalled[market]
            waiting = (market, seq + 1)
            if now - since < self.gap_rewind_seconds or self.asked.get(waiting, 0.0) > now:
                continue
            read = settlement_progress().consumer_offsets(topic=events_topic)
            if any(read.get(p, 0) < end for p, end in ends_then.items()):
                continue  # the consumer is down or behind: the event may still be on its way
            if settlement_progress().engine_event_received(market=market, seq=seq + 1):
                continue  # settlement has it: whatever holds it up is not a lost event
            self.asked[waiting] = now + _ASK_AGAIN_SECONDS
            return waiting
        return None

    def rewind_for(self, market: str, seq: int) -> None:
        """Go back to a snapshot from before `market`'s event `seq` and emit everything from there again."""
        earliest = client.first_offsets(self.consumer, topics.ORDERS, self.partitions)
        try:
            engine_rewind(market=market, seq=seq, earliest_offsets=earliest)
        except ExchangeError as exc:
            log.error("engine_self_rewind_refused", market=market, seq=seq, error=str(exc))
            return
        self.rewind()

    def rewind(self) -> None:
        """Start again from the snapshot `engine_rewind` stored, as after a restart."""
        log.warning("engine_rewound", worker=self.worker_id, previous_snapshot=self.snapshot_id)
        self.restore()
        self.connect()
        # The replay re-emits every market's events from the snapshot on: watch them all afresh.
        self.stalled.clear()

    def snapshot_due(self) -> bool:
        if self.commands == self.commands_at_snapshot:
            return False
        return (
            time.monotonic() - self.snapshot_at >= self.snapshot_seconds
            or self.commands - self.commands_at_snapshot >= self.snapshot_commands
        )

    # --- Kafka ------------------------------------------------------------------------------------

    def connect(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
        self.consumer = client.consumer(auto_offset_reset="earliest")
        assigned = [TopicPartition(topics.name(topics.ORDERS), p) for p in self.partitions]
        self.consumer.assign(assigned)
        for tp in assigned:
            self.consumer.seek(tp, self.offsets.get(tp.partition, 0))
        self.poller = client.Poller(self.consumer, max_records=settings.KAFKA["CONSUMER"]["max_poll_records"])

    def run_batch(self) -> int:
        batch = self.poller.poll()
        if not batch:
            return 0
        producer = client.producer()
        events_topic = topics.name(topics.ENGINE_EVENTS)
        futures = []
        touched: set[str] = set()
        applied = 0
        for tp, records in sorted(batch.items(), key=lambda item: item[0].partition):
            for record in records:
                try:
                    command = schemas.decode_command(record.value)
                except schemas.SchemaError as exc:
                    log.error("engine_bad_command", partition=tp.partition, offset=record.offset, error=str(exc))
                else:
                    for event in self.engine.apply(command):
                        futures.append(
                            producer.send(events_topic, key=event.market.encode(), value=schemas.encode_event(event))
                        )
                    touched.add(command.market)
                    self.applied_ts[command.market] = max(self.applied_ts.get(command.market, 0), command.ts)
                self.offsets[tp.partition] = record.offset + 1
                self.commands += 1
                applied += 1
        producer.flush(timeout=settings.KAFKA["PRODUCER"]["request_timeout_ms"] / 1000)
        failed = [f for f in futures if not f.is_done or f.failed()]
        if failed:
            raise SendFailed(f"{len(failed)} of {len(futures)} events not acknowledged: {failed[0].exception!r}")
        self.publish_state(touched)
        return applied

    # --- what the API reads -----------------------------------------------------------------------

    def _market(self, symbol: str) -> Market | None:
        if symbol not in self.markets:
            market = Market.objects.filter(pk=symbol).first()
            if market is None:
                return None
            self.markets[symbol] = market
        return self.markets[symbol]

    def publish_state(self, touched: set[str]) -> None:
        """Depth of each changed book, and the engine's sequences for the lag metric."""
        try:
            values = {}
            for symbol in touched:
                market = self._market(symbol)
                if market is None or symbol not in self.engine.markets:
                    continue
                sequence, bids, asks = self.engine.depth(symbol, settings.ENGINE_DEPTH_LEVELS)

                def levels(side: list[tuple[int, int]], market: Market = market) -> list[list[str]]:
                    return [[decimal_str(market.from_ticks(p)), decimal_str(market.from_lots(q))] for p, q in side]

                values[depth_cache_key(symbol)] = {"sequence": sequence, "bids": levels(bids), "asks": levels(asks)}
            values[ENGINE_STATE_KEY] = {
                "worker": self.worker_id,
                "commands": self.commands,
                "sequences": self.engine.sequences(),
                "applied_ts": self.applied_ts,
                "caught_up_at": self.caught_up_at,
            }
            # One round trip to Redis for every book and the state (a pipeline), after each batch.
            cache.set_many(values, timeout=None)
        except Exception:
            log.warning("engine_publish_state_failed", exc_info=True)

    # --- main loop --------------------------------------------------------------------------------

    # --- the loop ---------------------------------------------------------------------------------

    def setup(self) -> None:
        client.ensure_topics()
        self.restore()
        self.connect()
        log.info("engine_running", worker=self.worker_id, markets=sorted(self.engine.markets))

    def step(self) -> None:
        if not self.run_batch() and time.monotonic() - self.idle_published_at >= _IDLE_PUBLISH_SECONDS:
            # Nothing left to read: every command published before this moment has been applied.
            self.caught_up_at = int(time.time() * 1000)
            self.idle_published_at = time.monotonic()
            self.publish_state(set())
        if self.snapshot_due():
            close_old_connections()
            if not self.snapshot():
                self.rewind()
        elif time.monotonic() - self.rewind_checked_at >= _REWIND_CHECK_SECONDS:
            close_old_connections()
            self.rewind_checked_at = time.monotonic()
            if engine_snapshot_rewound(worker=self.worker_id, since=self.snapshot_id):
                self.rewind()
            elif self.gap_rewind_seconds and (lost := self.lost_event()):
                log.warning("engine_event_lost", market=lost[0], seq=lost[1])
                self.rewind_for(*lost)

    def on_failure(self) -> None:
        # Whatever was matched since the last snapshot is matched again, identically, from there.
        client.reset_producer()

    def teardown(self, *, ready: bool) -> None:
        if ready:
            try:
                client.producer().flush()
                close_old_connections()
                if not self.snapshot():
                    log.warning("engine_rewound_at_stop", worker=self.worker_id)
            except Exception as exc:  # noqa: BLE001 - the previous snapshot still holds
                log.error("engine_final_snapshot_failed", error=repr(exc))
        if self.consumer is not None:
            self.consumer.close()


class Command(BaseCommand):
    help = "Run the matching engine worker: consume orders from Kafka, match, publish engine events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--partitions",
            type=lambda s: [int(p) for p in s.split(",") if p],
            default=settings.ENGINE_PARTITIONS,
            help="Comma-separated partitions of the orders topic to own (default: all).",
        )
        parser.add_argument("--snapshot-seconds", type=float, default=settings.ENGINE_SNAPSHOT_SECONDS)
        parser.add_argument("--snapshot-commands", type=int, default=settings.ENGINE_SNAPSHOT_COMMANDS)
        parser.add_argument("--gap-rewind-seconds", type=float, default=settings.ENGINE_GAP_REWIND_SECONDS)

    def handle(self, *args: object, **options: object) -> None:
        worker = Worker(
            partitions=options["partitions"],
            snapshot_seconds=options["snapshot_seconds"],
            snapshot_commands=options["snapshot_commands"],
            gap_rewind_seconds=options["gap_rewind_seconds"],
        )
        worker.run()
