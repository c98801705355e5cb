"""`manage.py seed_staff`: one staff user per role for development, passwords kept in a private file."""

import stat
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import AuditLog, User
from console.management.commands.seed_staff import STAFF

pytestmark = pytest.mark.django_db

ROLE_OF = dict(STAFF)


@pytest.fixture
def run_dir(settings, tmp_path):
    settings.RUN_DIR = tmp_path
    return tmp_path


def seed() -> str:
    out = StringIO()
    call_command("seed_staff", stdout=out)
    return out.getvalue()


def passwords(path) -> dict[str, tuple[str, str]]:
    rows = [line.split() for line in path.read_text().splitlines() if not line.startswith("#")]
    return {username: (password, role) for username, password, role in rows}


def test_it_refuses_in_production_and_creates_nobody(settings, run_dir) -> None:
    settings.PRODUCTION = True
    with pytest.raises(CommandError, match="refused with EXCHANGE_ENV=production"):
        seed()
    assert not (run_dir / "staff.txt").exists()
    assert not User.objects.filter(username__in=ROLE_OF).exists()


def test_it_makes_one_staff_user_per_role_none_a_superuser(run_dir) -> None:
    output = seed()
    kept = passwords(run_dir / "staff.txt")

    assert set(kept) == {"support", "finance", "finance2", "markets", "compliance", "admin"}
    for username, (password, role) in kept.items():
        user = User.objects.get(username=username)
        assert (user.is_staff, user.is_superuser, user.is_active) == (True, False, True)
        assert list(user.groups.values_list("name", flat=True)) == [ROLE_OF[username]] == [role]
        assert user.check_password(password)
        assert password not in output
    assert str(run_dir / "staff.txt") in output
    assert AuditLog.objects.filter(action="staff_seed", actor=None).count() == 6


def test_the_password_file_is_readable_by_its_owner_only(run_dir) -> None:
    seed()
    assert stat.S_IMODE((run_dir / "staff.txt").stat().st_mode) == 0o600


def test_running_it_again_keeps_the_passwords_and_repairs_what_was_changed(run_dir) -> None:
    seed()
    first = passwords(run_dir / "staff.txt")
    finance = User.objects.get(username="finance")
    finance.is_superuser = True
    finance.set_password("changed-by-hand-1")
    finance.save()
    finance.groups.clear()
    (run_dir / "staff.txt").chmod(0o644)

    output = seed()

    assert passwords(run_dir / "staff.txt") == first
    assert stat.S_IMODE((run_dir / "staff.txt").stat().st_mode) == 0o600
    finance.refresh_from_db()
    assert not finance.is_superuser and finance.check_password(first["finance"][0])
    assert list(finance.groups.values_list("name", flat=True)) == ["finance"]
    assert "created or reset: finance" in output
    assert AuditLog.objects.filter(action="staff_seed").count() == 7


def test_a_line_removed_from_the_file_gets_a_new_password(run_dir) -> None:
    seed()
    path = run_dir / "staff.txt"
    first = passwords(path)
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if not line.startswith("markets")))
    seed()
    again = passwords(path)
    assert again["markets"][0] != first["markets"][0]
    assert User.objects.get(username="markets").check_password(again["markets"][0])
    assert {k: v for k, v in again.items() if k != "markets"} == {k: v for k, v in first.items() if k != "markets"}


def test_demo_markets_are_not_seeded_in_production_either(settings) -> None:
    from django.core.management import call_command

    from matching.models import Market

    settings.PRODUCTION = True
    with pytest.raises(CommandError, match="refused with EXCHANGE_ENV=production"):
        call_command("seed_demo")
    assert not Market.objects.exists()


def test_the_stack_seeds_nothing_in_production(monkeypatch) -> None:
    from exchange import stack

    ran: list[list[str]] = []
    monkeypatch.setattr(stack.subprocess, "run", lambda argv, **kw: ran.append(argv[2:]) or _Done())
    monkeypatch.setenv("EXCHANGE_ENV", "production")
    stack.prepare(stack.Config.from_env())
    assert [step[0] for step in ran] == ["migrate", "collectstatic", "kafka_topics"]
    monkeypatch.setenv("EXCHANGE_ENV", "development")
    ran.clear()
    stack.prepare(stack.Config.from_env())
    assert [step[0] for step in ran][-2:] == ["seed_demo", "seed_staff"]


class _Done:
    returncode = 0
