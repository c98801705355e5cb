import os

from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings")

app = Celery("exchange")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# A task gets the database connection the way a web request does (`CELERY_DB_REUSE_MAX` in the
# settings keeps Celery's own Django fix-up from closing it after every task): it is kept for
# CONN_MAX_AGE seconds, checked before its first use in each task (CONN_HEALTH_CHECKS), and
# replaced when an error left it unusable, as after a restart of PostgreSQL.
# A task applied eagerly runs inside its caller's request or transaction, whose connection is not
# the task's to close (Celery's fix-up leaves it alone too).


def _connections_tidy(sender: object = None, **kwargs: object) -> None:
    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()


task_prerun.connect(_connections_tidy, dispatch_uid="exchange_db_prerun")
task_postrun.connect(_connections_tidy, dispatch_uid="exchange_db_postrun")
