from celery import shared_task

from matching.services import outbox_relay as outbox_relay_service


@shared_task(ignore_result=True)
def outbox_relay() -> int:
    return outbox_relay_service()
