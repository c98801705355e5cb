import decimal

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and money"

    def ready(self) -> None:
        from accounts.models import MONEY_PRECISION

        # DefaultContext is the prototype of every thread's context created from now on (gunicorn's
        # and Celery's threads); the current thread already has its own.
        decimal.DefaultContext.prec = MONEY_PRECISION
        decimal.getcontext().prec = MONEY_PRECISION
