"""The outbox relay: publishes the outbox to Kafka, so that no web worker ever talks to the broker.

A trigger on the outbox table notifies the `outbox` channel when a transaction that inserted rows
commits; the relay LISTENs on it with a connection of its own and, woken by a notification (or after
`WAKE_SECONDS` in any case), publishes everything unpublished in batches, in id order
(`matching.services.outbox_relay_batch`). Every `OUTBOX_RETRY_SECONDS / 2` it also sends again the
commands the engine never answered (`orders_resend_stale`), so every write to the `orders` topic
comes from this one process.

One relay publishes at a time: it holds a PostgreSQL advisory lock on its listening connection for
as long as it runs, and a second one waits for that lock instead of sending the same rows in between.
If the first one dies its connection closes, PostgreSQL releases the lock, and the second one takes
over from whatever is still unpublished.
"""

import time

import psycopg
import structlog
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections, connection

from core.worker import LoopWorker
from matching.models import OUTBOX_CHANNEL
from matching.services import orders_resend_stale, outbox_relay_batch

log = structlog.get_logger(__name__)

# The advisory lock that makes one relay the active one (any fixed number: "outbox" in ASCII).
RELAY_LOCK = 0x6F7574626F78
# The longest the relay sleeps without a notification: a safety net for a notification it missed
# (e.g. while its listening connection was being rebuilt).
WAKE_SECONDS = 1.0
# How often a relay that waits for the lock asks again.
LOCK_RETRY_SECONDS = 0.5
# A pass the broker failed is tried again after this pause, doubling up to the longest.
FAILED_PAUSE_SECONDS, LONGEST_FAILED_PAUSE_SECONDS = 0.5, 10.0


class Relay(LoopWorker):
    name = "outbox_relay"

    def __init__(self, *, batch_size: int, wake_seconds: float = WAKE_SECONDS) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.wake_seconds = wake_seconds
        self.resend_every = max(settings.OUTBOX_RETRY_SECONDS / 2, 0.5)
        self.resent_at = 0.0
        self.failed_pause = FAILED_PAUSE_SECONDS
        self.listener: psycopg.Connection | None = None
        self.active = False

    # --- the listening connection and the lock -----------------------------------------------------

    def setup(self) -> None:
        self.close_listener()
        # Django's own connection settings (the same database, the process's application_name), but
        # a connection Django does not manage: close_old_connections() must never close it, since
        # it holds the lock and the LISTEN.
        self.listener = psycopg.connect(**connection.get_connection_params(), autocommit=True)
        waiting_since = None
        while not self.stopping:
            if self.listener.execute("SELECT pg_try_advisory_lock(%s)", [RELAY_LOCK]).fetchone()[0]:
                break
            if waiting_since is None:
                waiting_since = time.monotonic()
                log.info("outbox_relay_waiting", reason="another relay holds the lock")
            self.pause(LOCK_RETRY_SECONDS)
        else:
            return
        # LISTEN before the first pass: what commits after it wakes the relay, what committed
        # before it is found by that pass.
        self.listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        self.active = True
        log.info("outbox_relay_active", waited=round(time.monotonic() - waiting_since, 1) if waiting_since else 0)

    def close_listener(self) -> None:
        self.active = False
        if self.listener is not None:
            try:
                self.listener.close()  # releases the lock
            except psycopg.Error:
                log.warning("outbox_relay_listener_close_failed", exc_info=True)
            self.listener = None

    def on_failure(self) -> None:
        self.close_listener()

    def teardown(self, *, ready: bool) -> None:
        self.close_listener()

    # --- the loop ----------------------------------------------------------------------------------

    def step(self) -> None:
        if not self.active:
            return
        close_old_connections()
        done = outbox_relay_batch(limit=self.batch_size)
        if time.monotonic() - self.resent_at >= self.resend_every:
            orders_resend_stale()
            self.resent_at = time.monotonic()
        if done.failed:
            self.pause(self.failed_pause)
            self.failed_pause = min(self.failed_pause * 2, LONGEST_FAILED_PAUSE_SECONDS)
            return
        self.failed_pause = FAILED_PAUSE_SECONDS
        if done.taken < self.batch_size:
            self.wait_for_rows()
        # A full batch: more may be waiting, so the next pass starts at once.

    def wait_for_rows(self) -> None:
        """Sleep until a notification arrives or `wake_seconds` pass; then drop the notifications
        queued meanwhile, since one pass publishes whatever they announced."""
        assert self.listener is not None
        for _ in self.listener.notifies(timeout=self.wake_seconds, stop_after=1):
            pass
        for _ in self.listener.notifies(timeout=0):
            pass


class Command(BaseCommand):
    help = "Publish the outbox to Kafka (woken by PostgreSQL notifications) and resend unanswered orders."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=settings.OUTBOX_BATCH_SIZE)

    def handle(self, *args: object, **options: object) -> None:
        Relay(batch_size=options["batch_size"]).run()
