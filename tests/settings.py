"""Settings for the test suite: the real services, with names of their own so that a test run never
touches the data, topics or queues of an exchange running on the same machine."""

import os
import uuid

RUN_ID = os.environ.setdefault("EXCHANGE_TEST_RUN_ID", uuid.uuid4().hex[:8])
os.environ.setdefault("KAFKA_TOPIC_PREFIX", f"test-{RUN_ID}-")
os.environ.setdefault("CELERY_QUEUE", f"test-{RUN_ID}")
os.environ.setdefault("CACHE_KEY_PREFIX", f"test-{RUN_ID}")
os.environ.setdefault("THROTTLE_ANON", "100000/minute")
os.environ.setdefault("THROTTLE_USER", "100000/minute")
os.environ.setdefault("THROTTLE_ORDERS", "100000/minute")
os.environ.setdefault("THROTTLE_AUTH", "100000/minute")
# The secret custody signs with; the end-to-end processes, started with this environment, share it.
os.environ.setdefault("CUSTODY_WEBHOOK_SECRET", f"test-custody-secret-{RUN_ID}")

from exchange.settings import *  # noqa: E402, F403

# Hashing passwords at full strength makes every test that logs in slow, and proves nothing.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Admin pages rendered by the test client name their static files; the manifest that production's
# storage looks them up in exists only after collectstatic.
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}  # noqa: F405
