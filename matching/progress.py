"""What the matching worker reads about settlement, without importing settlement.

Settlement sits above matching: it consumes the engine's output and applies it. The worker still
needs three facts from settlement's side: how far each market is settled (to keep a snapshot that
settlement may need to be replayed from), how far the settlement consumer has read the events topic,
and whether an event reached settlement's inbox (together, to tell an event the broker lost from a
consumer that is merely behind). Settlement registers the reader when its app loads
(`settlement.apps`); the worker asks through `settlement_progress()`, which fails loudly when nothing
registered instead of guessing.
"""

from collections.abc import Iterable
from typing import Protocol

from django.core.exceptions import ImproperlyConfigured


class SettlementProgress(Protocol):
    def settled_sequences(self, *, markets: Iterable[str]) -> dict[str, int]:
        """Each market's last sequence number that settlement has applied."""

    def consumer_offsets(self, *, topic: str) -> dict[int, int]:
        """Per partition of `topic`, the offset the settlement consumer reads next."""

    def engine_event_received(self, *, market: str, seq: int) -> bool:
        """Whether settlement's inbox holds the market's event `seq`."""


_registered: list[SettlementProgress] = []


def settlement_progress_register(progress: SettlementProgress) -> None:
    _registered[:] = [progress]


def settlement_progress() -> SettlementProgress:
    if not _registered:
        raise ImproperlyConfigured("No settlement progress reader is registered: is the settlement app installed?")
    return _registered[0]
