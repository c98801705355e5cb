"""Make the matching worker emit a market's events again from before a given sequence number."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ExchangeError
from core.kafka import client, topics
from matching.services import engine_rewind


class Command(BaseCommand):
    help = (
        "Rewind the matching worker that owns MARKET to its newest snapshot from before event SEQ, so that "
        "it replays its input and emits every event from there on again (identically). For a sequence gap "
        "that restarting the worker does not fill, after the event stream lost events."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("market", help="Market symbol, e.g. BTC_USDT.")
        parser.add_argument("seq", type=int, help="The first sequence number that must be emitted again.")

    def handle(self, *args: object, **options: object) -> None:
        consumer = client.consumer()
        try:
            earliest = client.first_offsets(consumer, topics.ORDERS)
        finally:
            consumer.close()
        try:
            snapshot, at = engine_rewind(
                market=options["market"],
                seq=options["seq"],
                earliest_offsets=earliest,
            )
        except ExchangeError as exc:
            raise CommandError(f"{exc.code}: {exc}") from exc
        self.stdout.write(
            f"{snapshot.worker} rewound to snapshot {snapshot.pk}: {options['market']} at sequence {at}, "
            f"input offsets {snapshot.offsets}. The running worker replays from there within a second; "
            f"events {at + 1} onwards of {options['market']} are emitted again."
        )
