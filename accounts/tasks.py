from celery import shared_task

from accounts.services import idempotency_keys_expire as idempotency_keys_expire_service
from accounts.services import tokens_flush_expired as tokens_flush_expired_service


@shared_task(ignore_result=True)
def idempotency_keys_expire() -> int:
    """A client may repeat a request with the same `Idempotency-Key` for a day; after that the key is
    forgotten."""
    return idempotency_keys_expire_service()


@shared_task(ignore_result=True)
def tokens_flush_expired() -> int:
    """Expired refresh tokens, their blacklist rows and expired logins are dead weight: SimpleJWT's
    `flushexpiredtokens`, on a schedule, with the logins."""
    return tokens_flush_expired_service()
