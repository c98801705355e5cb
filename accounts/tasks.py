from celery import shared_task

from accounts.services import idempotency_keys_expire as idempotency_keys_expire_service


@shared_task(ignore_result=True)
def idempotency_keys_expire() -> int:
    """A client may repeat a request with the same `Idempotency-Key` for a day; after that the key is
    forgotten."""
    return idempotency_keys_expire_service()
