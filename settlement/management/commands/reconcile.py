"""Check every money invariant; print what was checked; exit non-zero naming whatever breaks one."""

from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError, CommandParser

from settlement.reconciliation import reconciliation_checks, reconciliation_run


class Command(BaseCommand):
    help = "Check every invariant of the money rules, every hash chain from genesis, and report the breaches."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--record",
            action="store_true",
            help="Keep the result for the admin (and alert on a failure), as beat's full run does.",
        )

    def handle(self, *args: object, **options: object) -> None:
        if options["record"]:
            checks = reconciliation_run().checks
        else:
            checks = [{**asdict(c), "ok": c.ok} for c in reconciliation_checks()]
        width = max(len(c["check"]) for c in checks)
        self.stdout.write(f"{'check':<{width}}  {'checked':>8}  {'ms':>7}  result")
        for check in checks:
            result = "ok" if check["ok"] else f"FAILED ({check['count']})"
            self.stdout.write(f"{check['check']:<{width}}  {check['checked']:>8}  {check['duration_ms']:>7}  {result}")
            for problem in check["problems"]:
                self.stdout.write(f"{'':<{width}}                     - {problem}")
        failed = [c["check"] for c in checks if not c["ok"]]
        if failed:
            raise CommandError(f"{len(failed)} invariant(s) broken: {', '.join(failed)}")
        self.stdout.write("all invariants hold")
