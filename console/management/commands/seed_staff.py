"""One staff account per role for development, with generated passwords kept in .run/staff.txt."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.services import staff_account_seed
from core.errors import ExchangeError

# (username, role): two finance users, so that one can approve what the other proposed.
STAFF = [
    ("support", "support"),
    ("finance", "finance"),
    ("finance2", "finance"),
    ("markets", "markets"),
    ("compliance", "compliance"),
    ("admin", "admin"),
]

HEADER = (
    "# Development staff accounts made by `manage.py seed_staff`: username, password, role.\n"
    "# Passwords are generated on the first run and kept here; delete a line to get a new one.\n"
)


def passwords_read(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    kept = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.startswith("#"):
            kept[fields[0]] = fields[1]
    return kept


def passwords_write(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """Written to a new file that only this account may read, then moved into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(HEADER)
        out.writelines(f"{username:<12} {password}  {role}\n" for username, password, role in rows)
    # The umask may have taken bits off at creation, and an earlier partial file may be left over.
    os.chmod(partial, 0o600)
    os.replace(partial, path)


class Command(BaseCommand):
    help = "Create one staff user per role (development only); passwords go to .run/staff.txt."

    def handle(self, *args: object, **options: object) -> None:
        if settings.PRODUCTION:
            raise CommandError(
                "seed_staff makes staff accounts with passwords written to a file: refused with "
                "EXCHANGE_ENV=production. Create real staff in the admin (or a break-glass superuser "
                "with `manage.py createsuperuser`)."
            )
        path = Path(settings.RUN_DIR) / "staff.txt"
        kept = passwords_read(path)
        rows = [(username, kept.get(username) or secrets.token_urlsafe(12), role) for username, role in STAFF]
        passwords_write(path, rows)
        changed = []
        for username, password, role in rows:
            try:
                if staff_account_seed(username=username, role=role, password=password):
                    changed.append(username)
            except ExchangeError as exc:
                raise CommandError(exc.message) from exc
        names = ", ".join(username for username, _, _ in rows)
        self.stdout.write(f"staff accounts ({names}): passwords in {path}")
        if changed:
            self.stdout.write(f"created or reset: {', '.join(changed)}")
