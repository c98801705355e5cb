from datetime import timedelta

from celery import shared_task
from django.db import OperationalError
from django.utils import timezone

from accounts.models import Deposit
from accounts.services import deposit_credit


@shared_task(autoretry_for=(OperationalError,), retry_backoff=1, retry_backoff_max=30, max_retries=None)
def deposit_credit_task(deposit_id: int) -> str:
    return deposit_credit(deposit_id=deposit_id).status


@shared_task(ignore_result=True)
def deposits_credit_pending(older_than_seconds: float = 5.0) -> int:
    """Beat's safety net for deposits whose credit task was lost with the Celery broker."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        Deposit.objects.filter(status=Deposit.Status.PENDING, created_at__lt=cutoff).values_list("pk", flat=True)
    )
    for deposit_id in ids:
        deposit_credit_task.delay(deposit_id)
    return len(ids)
