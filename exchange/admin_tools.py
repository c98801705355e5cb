"""Admin building blocks shared by the apps."""

from collections.abc import Callable, Iterable

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from exchange.errors import ExchangeError


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money history: operators can look, filter and search, never add, edit or delete."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_approve_permission(self, request: HttpRequest) -> bool:
        """Actions that go through a service (approve, reject, cancel) need the model's change
        permission, although the rows themselves are never edited in a form."""
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


def run_service_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    service: Callable[[Model], object],
    done: str,
) -> None:
    """Call a service for each selected row; report what worked and, one by one, what was refused."""
    succeeded = 0
    objects: Iterable[Model] = queryset.order_by("pk")
    for obj in objects:
        try:
            service(obj)
        except ExchangeError as exc:
            modeladmin.message_user(request, f"{obj}: {exc.message}", messages.WARNING)
        else:
            succeeded += 1
    if succeeded:
        modeladmin.message_user(request, f"{succeeded} {done}.", messages.SUCCESS)
