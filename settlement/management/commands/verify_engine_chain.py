"""Walk the stored engine events of every market and check the sequence and the hash chain."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from settlement.reconciliation import chain_check, event_markets


class Command(BaseCommand):
    help = "Verify the hash chain of the stored engine events, market by market."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("markets", nargs="*", help="Markets to check (default: all).")

    def handle(self, *args: object, **options: object) -> None:
        markets = options["markets"] or event_markets()
        broken = 0
        self.stdout.write(f"{'market':<12} {'events':>8}  {'last hash':<64}  result")
        for market in markets:
            walk = chain_check(market)
            count, problems = walk.checked, walk.problems
            result = "ok" if problems == [] and count else ("no events" if not count else "; ".join(problems))
            broken += bool(problems)
            self.stdout.write(f"{market:<12} {count:>8}  {walk.last:<64}  {result}")
        if broken:
            raise CommandError(f"{broken} market(s) with a broken chain")
