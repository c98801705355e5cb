"""The outbox relay: publishes the outbox to Kafka, so that no web worker ever talks to the broker.

The relay publishes everything unpublished in batches, in id order
(`matching.services.outbox_relay_batch`). When a pass leaves nothing behind, it looks for new rows
every `OUTBOX_POLL_SECONDS` with one index-only statement on a connection of its own, and starts
the next pass as soon as there are some; under load each pass so takes what a poll interval
brought, as one send. Every `OUTBOX_RETRY_SECONDS / 2` it also sends again the commands the engine
never answered (`orders_resend_stale`), so every write to the `orders` topic comes from this one
process.

It does not LISTEN for a notification from the writers: PostgreSQL serialises the commits of all
transactions that sent a NOTIFY behind one database-wide lock, held while the commit is flushed, so
a trigger notifying at commit made every order's commit wait for the one before it
(docs/decisions.md, *How the relay learns of new rows*).

The relay also counts the orders still `pending` every `BACKLOG_REPORT_SECONDS` and stores the
count in Redis, where the API reads it to refuse new orders while more than `MAX_PENDING_ORDERS`
wait (`core.throttling.BacklogThrottle`).

One relay publishes at a time: it holds a PostgreSQL advisory lock on its own connection for as
long as it runs, and a second one waits for that lock instead of sending the same rows in between.
If the first one dies its connection closes, PostgreSQL releases the lock, and the second one takes
over from whatever is still unpublished.
"""

import time

import psycopg
import structlog
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections, connection
from redis.exceptions import RedisError

from core.throttling import backlog_report
from core.worker import LoopWorker
from matching.selectors import orders_pending_count
from matching.services import OUTBOX_WAITING_SQL, orders_resend_stale, outbox_relay_batch

log = structlog.get_logger(__name__)

# The advisory lock that makes one relay the active one (any fixed number: "outbox" in ASCII).
RELAY_LOCK = 0x6F7574626F78
# How often the relay counts the pending orders for the API (`core.throttling.BacklogThrottle`);
# the count expires in Redis after BACKLOG_TTL_SECONDS without a new one.
BACKLOG_REPORT_SECONDS = 0.5
# How often a relay that waits for the lock asks again.
LOCK_RETRY_SECONDS = 0.5
# A pass the broker failed is tried again after this pause, doubling up to the longest.
FAILED_PAUSE_SECONDS, LONGEST_FAILED_PAUSE_SECONDS = 0.5, 10.0


class Relay(LoopWorker):
    name = "outbox_relay"

    def __init__(self, *, batch_size: int, poll_seconds: float | None = None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.poll_seconds = settings.OUTBOX_POLL_SECONDS if poll_seconds is None else poll_seconds
        self.resend_every = max(settings.OUTBOX_RETRY_SECONDS / 2, 0.5)
        self.resent_at = 0.0
        self.reported_at = 0.0
        self.failed_pause = FAILED_PAUSE_SECONDS
        self.own: psycopg.Connection | None = None
        self.active = False

    # --- its own connection and the lock ----------------------------------------------------------

    def setup(self) -> None:
        self.close_own()
        # Django's own connection settings (the same database, the process's application_name), but
        # a connection Django does not manage: close_old_connections() must never close it, since
        # it holds the lock.
        self.own = psycopg.connect(**connection.get_connection_params(), autocommit=True)
        waiting_since = None
        while not self.stopping:
            if self.own.execute("SELECT pg_try_advisory_lock(%s)", [RELAY_LOCK]).fetchone()[0]:
                break
            if waiting_since is None:
                waiting_since = time.monotonic()
                log.info("outbox_relay_waiting", reason="another relay holds the lock")
            self.pause(LOCK_RETRY_SECONDS)
        else:
            return
        self.active = True
        log.info("outbox_relay_active", waited=round(time.monotonic() - waiting_since, 1) if waiting_since else 0)

    def close_own(self) -> None:
        self.active = False
        if self.own is not None:
            try:
                self.own.close()  # releases the lock
            except psycopg.Error:
                log.warning("outbox_relay_connection_close_failed", exc_info=True)
            self.own = None

    def on_failure(self) -> None:
        self.close_own()

    def teardown(self, *, ready: bool) -> None:
        self.close_own()

    # --- the loop ----------------------------------------------------------------------------------

    def step(self) -> None:
        if not self.active:
            return
        sweep = time.monotonic() - self.resent_at >= self.resend_every
        if sweep:
            # Django's connection gets CONN_MAX_AGE and a health check, as a request does, once a
            # sweep rather than once a pass (a health check is a statement); a pass that fails on a
            # dead connection gets a new one through LoopWorker's failure path.
            close_old_connections()
        done = outbox_relay_batch(limit=self.batch_size)
        if sweep:
            orders_resend_stale()
            self.resent_at = time.monotonic()
        if done.failed:
            self.pause(self.failed_pause)
            self.failed_pause = min(self.failed_pause * 2, LONGEST_FAILED_PAUSE_SECONDS)
            return
        self.failed_pause = FAILED_PAUSE_SECONDS
        self.report_backlog()
        if done.taken < self.batch_size:
            self.wait_for_rows()
        # A full batch: more may be waiting, so the next pass starts at once.

    def wait_for_rows(self) -> None:
        """Look for unpublished rows every `poll_seconds` until there are some, or until the resend
        sweep is due, which the next step runs."""
        assert self.own is not None
        until = self.resent_at + self.resend_every
        while not self.stopping and time.monotonic() < until:
            self.pause(self.poll_seconds)
            if self.own.execute(OUTBOX_WAITING_SQL).fetchone() is not None:
                return
            self.report_backlog()

    def report_backlog(self) -> None:
        """Count the pending orders for the API, every `BACKLOG_REPORT_SECONDS`. A count that cannot
        be stored is skipped: the last one expires, and the API stops refusing for it."""
        if time.monotonic() - self.reported_at < BACKLOG_REPORT_SECONDS:
            return
        self.reported_at = time.monotonic()
        try:
            backlog_report(orders_pending_count(at_most=settings.MAX_PENDING_ORDERS))
        except (RedisError, OSError):
            log.warning("outbox_relay_backlog_unreported", exc_info=True)


class Command(BaseCommand):
    help = "Publish the outbox to Kafka (looking for new rows every OUTBOX_POLL_SECONDS) and resend unanswered orders."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=settings.OUTBOX_BATCH_SIZE)

    def handle(self, *args: object, **options: object) -> None:
        Relay(batch_size=options["batch_size"]).run()
