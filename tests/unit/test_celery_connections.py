"""A Celery worker keeps its database connection from one task to the next, as a web worker does
between requests, and replaces it when it stops working."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from tests.unit.celery_probe import backend_pid

ROOT = Path(__file__).resolve().parents[2]


def served_by(key: str, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (pid := cache.get(key)) is not None:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"no worker ran the task {key} within {timeout:.0f}s")


def run_task() -> int:
    key = f"celery-probe:{uuid.uuid4().hex}"
    backend_pid.delay(key)
    return served_by(key)


@pytest.fixture
def worker():
    """A real worker process on the test database, the tests' queue and Redis, with the prefork pool
    of one process that production uses."""
    database_url = urlunsplit(urlsplit(settings.DATABASE_URL)._replace(path=f"/{connection.settings_dict['NAME']}"))
    env = {**os.environ, "DATABASE_URL": database_url, "EXCHANGE_PROCESS": "celery-probe"}
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "exchange", "worker", "--concurrency", "1", "-I",
         "tests.unit.celery_probe", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_tasks_share_one_connection_and_a_lost_one_is_replaced(worker):
    first = run_task()
    assert [run_task() for _ in range(3)] == [first] * 3

    # PostgreSQL ends the backend between two tasks (as a restart of the server does): the next task
    # finds out before its first statement and connects again, rather than failing.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [first])
    replaced = run_task()
    assert replaced != first
    assert run_task() == replaced
    assert worker.poll() is None
