"""The loop every long-running worker shares (the matching worker, the settlement consumer)."""

import signal
import time
from types import FrameType

import structlog
from django.db import close_old_connections

log = structlog.get_logger(__name__)


class LoopWorker:
    """Runs `step` until SIGTERM or SIGINT. When anything fails it calls `setup` again (after a
    pause that doubles while the failure lasts, up to 30 s), so a worker outlives a broker or a
    database that goes away for a while."""

    name = "worker"

    def __init__(self) -> None:
        self.stopping = False

    def setup(self) -> None:
        """Connect and position; called at start and after every failure."""

    def step(self) -> None:
        raise NotImplementedError

    def on_failure(self) -> None:
        """Drop whatever state the failure may have left half done."""

    def teardown(self, *, ready: bool) -> None:
        """Clean stop; `ready` says whether the last setup succeeded."""

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        backoff, ready = 1.0, False
        while not self.stopping:
            try:
                if not ready:
                    self.setup()
                    ready = True
                self.step()
                backoff = 1.0
            except Exception as exc:  # noqa: BLE001 - the next setup starts again from stored state
                log.error(f"{self.name}_failed", error=repr(exc), retry_in=backoff)
                ready = False
                self.on_failure()
                close_old_connections()
                self.pause(backoff)
                backoff = min(backoff * 2, 30.0)
        self.teardown(ready=ready)
        log.info(f"{self.name}_stopped")

    def pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def stop(self, signum: int, frame: FrameType | None) -> None:
        log.info(f"{self.name}_stopping", signal=signum)
        self.stopping = True
