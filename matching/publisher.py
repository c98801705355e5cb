"""Publishes outbox rows right after their transaction commits, from a thread of its own.

A request that saved an order returns without waiting for the broker: if Kafka is slow or away,
the order is still saved and answered at once, and the relay (a beat task) publishes it later.
"""

import os
import queue
import threading
from collections.abc import Callable

import structlog
from django.db import close_old_connections, connection

log = structlog.get_logger(__name__)

# How long a process that is exiting waits for what it queued to reach the broker; anything left
# is the relay's.
EXIT_WAIT_SECONDS = 5.0


class OutboxPublisher:
    """Runs `publish` (given the outbox ids) on its own thread. The service that owns the outbox
    passes it in, so this module needs nothing from the services that use it."""

    def __init__(self, publish: Callable[[list[int]], object]) -> None:
        self._publish = publish
        self._queue: queue.Queue[list[int]] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def submit(self, ids: list[int]) -> None:
        with self._lock:
            # A forked worker (gunicorn, Celery) inherits no running thread: start its own.
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._queue = queue.Queue()
                self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
                self._pid = os.getpid()
                self._thread.start()
        self._queue.put(ids)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:  # everything already waiting goes in one pass
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                close_old_connections()
                self._publish([outbox_id for ids in batch for outbox_id in ids])
            except Exception as exc:  # noqa: BLE001 - the relay publishes whatever this missed
                log.warning("outbox_publisher_failed", error=repr(exc))
            finally:
                connection.close()
                for _ in batch:
                    self._queue.task_done()

    def drain(self, timeout: float) -> None:
        """Wait (at most `timeout`) for what was submitted to be published."""
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            return
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        done.wait(timeout)
