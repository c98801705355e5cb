"""Settings for `make test-fast`: PostgreSQL only. The cache lives in the test process's memory,
Celery's broker is in memory too, and Kafka clients point at an address where no broker answers,
so anything that sends fails at once, as it does when the broker is away (no relay runs: orders
stay in the outbox). Tests that need Redis or the broker are marked `services` and
deselected."""

import os

os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:9/0")

from tests.settings import *  # noqa: F403

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "KEY_PREFIX": CACHE_KEY_PREFIX}}  # noqa: F405
CELERY_BROKER_URL = "memory://"
