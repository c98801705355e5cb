"""benchmarks/e2e.py counts PostgreSQL's CPU for the process each backend works for, so that the
figures per stage include the database work each stage causes."""

import importlib
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def e2e(monkeypatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as when the script runs: its neighbours import
    yield importlib.import_module("e2e")


def test_a_process_that_ended_is_not_counted_twice(e2e):
    before = {
        10: ("postgresql", 5.0),  # the postmaster
        20: ("postgresql for relay", 3.0),
        30: ("postgresql for api", 1.0),
        40: ("api", 2.0),  # a gunicorn worker
        41: ("api", 1.0),  # gunicorn's master
    }
    # Backend 20 and worker 40 ended: their parents' counts now hold all they used (3.0 + 0.5 and
    # 2.0 + 0.3), beside what the parents used themselves (0 and 0.2).
    after = {10: ("postgresql", 8.5), 30: ("postgresql for api", 2.0), 41: ("api", 3.5)}
    used = e2e.cpu_used(before, after)
    assert used == pytest.approx({"postgresql": 0.5, "postgresql for api": 1.0, "api": 0.5})


def test_a_backend_that_changes_hands_is_counted_for_its_new_owner_from_then_on(e2e):
    before = {20: ("postgresql", 1.0)}  # not yet known as the relay's
    after = {20: ("postgresql for relay", 1.4)}
    assert e2e.cpu_used(before, after) == pytest.approx({"postgresql for relay": 0.4})


@pytest.mark.services
def test_the_meter_counts_a_backend_for_the_process_that_named_its_connection(e2e):
    params = connection.get_connection_params()
    dsn = psycopg.conninfo.make_conninfo(
        **{key: value for key, value in params.items() if key in ("host", "port", "user", "password", "dbname")}
    )
    meter = e2e.CpuMeter(dsn)
    meter.start()
    # Opened after the meter began, and closed before it ends: its time until the meter's last
    # reading before it closed is the relay's, the rest the server's.
    with psycopg.connect(dsn, autocommit=True, application_name="exchange-relay") as relay:
        ends = time.monotonic() + 2.5
        while time.monotonic() < ends:
            relay.execute("SELECT sum(i) FROM generate_series(1, 20000) i")
        assert meter.owners[relay.info.backend_pid] == "relay"
    cores = meter.finish()
    assert cores["postgresql for relay"] > 0.1
