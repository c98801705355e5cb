"""Walk the stored engine events of every market and check the sequence and the hash chain."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from matching.engine import GENESIS_HASH, canonical, chain_hash, event_from_dict
from settlement.models import EngineEvent


def chain_check(market: str) -> tuple[int, str, list[str]]:
    """(events checked, last hash, problems) for one market's stored events."""
    problems: list[str] = []
    expected, previous, count = 1, GENESIS_HASH, 0
    rows = EngineEvent.objects.filter(market=market).order_by("seq").values_list("seq", "payload", "hash")
    for seq, payload, digest in rows.iterator(chunk_size=2000):
        count += 1
        if seq != expected:
            problems.append(f"#{expected}..#{seq - 1} missing")
            # The chain cannot be checked across a hole; carry on from the next stored event.
            previous = None
        try:
            event = event_from_dict(payload, digest)
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"#{seq} unreadable: {exc}")
            previous, expected = None, seq + 1
            continue
        if previous is not None and chain_hash(previous, canonical(event)) != digest:
            problems.append(f"#{seq} does not chain onto #{seq - 1}")
        previous, expected = digest, seq + 1
    return count, previous or "", problems


class Command(BaseCommand):
    help = "Verify the hash chain of the stored engine events, market by market."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("markets", nargs="*", help="Markets to check (default: all).")

    def handle(self, *args: object, **options: object) -> None:
        markets = options["markets"] or sorted(EngineEvent.objects.values_list("market", flat=True).distinct())
        broken = 0
        self.stdout.write(f"{'market':<12} {'events':>8}  {'last hash':<64}  result")
        for market in markets:
            count, last, problems = chain_check(market)
            result = "ok" if problems == [] and count else ("no events" if not count else "; ".join(problems))
            broken += bool(problems)
            self.stdout.write(f"{market:<12} {count:>8}  {last:<64}  {result}")
        if broken:
            raise CommandError(f"{broken} market(s) with a broken chain")
