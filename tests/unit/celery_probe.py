"""A task for tests that run a real Celery worker (`celery worker -I tests.unit.celery_probe`): it
records which PostgreSQL backend served it."""

from celery import shared_task
from django.core.cache import cache
from django.db import connection


@shared_task
def backend_pid(key: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        cache.set(key, cursor.fetchone()[0], timeout=300)
