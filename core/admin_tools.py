"""Admin building blocks shared by the apps."""

from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import label_for_field
from django.core.paginator import Page, Paginator
from django.db import connections, models
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.functional import cached_property

from core.api import decimal_str, is_plain_decimal
from core.errors import ExchangeError

_AMOUNT_SUFFIX = "__amount"


class AmountFormField(forms.DecimalField):
    """Shows 0.01 in an input, not the column's 0.010000000000000000, and reads only a plain decimal
    (as the API does): no exponent, underscores, other scripts' digits or NaN, and a minus sign only
    where the amount may be negative (`signed`, a balance adjustment)."""

    def __init__(self, *, signed: bool = False, **kwargs: object) -> None:
        self.signed = signed
        super().__init__(**kwargs)

    def to_python(self, value: object) -> Decimal | None:
        text = str(value).strip() if value is not None else ""
        if text and not is_plain_decimal(text, signed=self.signed):
            sign = "an optional leading minus, " if self.signed else ""
            raise forms.ValidationError(
                f"Enter a plain decimal: {sign}digits with at most one decimal point.", code="invalid"
            )
        return super().to_python(value)

    def prepare_value(self, value: object) -> object:
        return decimal_str(value) if isinstance(value, Decimal) else value


class AmountsMixin(admin.options.BaseModelAdmin):
    """Amounts read as 0.01 and 50000 in lists and read-only pages, as the API writes them, rather
    than with the eighteen places of their column."""

    formfield_overrides = {models.DecimalField: {"form_class": AmountFormField}}
    change_readonly_fields: Sequence[str] = ()
    """Fields that can be set when an object is added and never changed afterwards."""

    def _decimal_names(self) -> set[str]:
        return {f.name for f in self.model._meta.fields if isinstance(f, models.DecimalField)}

    def __getattr__(self, name: str) -> Callable[..., object]:
        if name.startswith("has_") and name.endswith("_permission"):
            # An action declared with `permissions=["approve_withdrawal"]` needs the model's app's
            # permission of that codename, and nothing broader such as `change`.
            codename = name.removeprefix("has_").removesuffix("_permission")
            perm = f"{self.opts.app_label}.{codename}"
            return lambda request, obj=None: request.user.has_perm(perm)
        if not name.endswith(_AMOUNT_SUFFIX):
            raise AttributeError(name)
        field = name.removesuffix(_AMOUNT_SUFFIX)

        @admin.display(description=label_for_field(field, self.model), ordering=field)
        def show(obj: Model) -> str | None:
            return decimal_str(getattr(obj, field))

        return show

    def _plain_readonly_fields(self, request: HttpRequest, obj: Model | None) -> list[object]:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            readonly += [n for n in self.change_readonly_fields if n not in readonly]
        return readonly

    def _read_only_amounts(self, request: HttpRequest, obj: Model | None) -> set[str]:
        decimals = self._decimal_names()
        if not self.has_change_permission(request, obj):
            return decimals
        return decimals & {n for n in self._plain_readonly_fields(request, obj) if isinstance(n, str)}

    def get_list_display(self, request: HttpRequest) -> list[object]:
        decimals = self._decimal_names()
        return [
            f"{n}{_AMOUNT_SUFFIX}" if isinstance(n, str) and n in decimals else n
            for n in super().get_list_display(request)
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[object]:
        # The plain names keep the columns out of the form; the suffixed ones are what is shown.
        amounts = sorted(self._read_only_amounts(request, obj))
        readonly = self._plain_readonly_fields(request, obj)
        return [*readonly, *(n for n in amounts if n not in readonly), *(f"{n}{_AMOUNT_SUFFIX}" for n in amounts)]

    def get_fields(self, request: HttpRequest, obj: Model | None = None) -> list[object]:
        amounts = self._read_only_amounts(request, obj)
        shown: list[object] = []
        for name in super().get_fields(request, obj):
            if isinstance(name, str) and name in amounts:
                name = f"{name}{_AMOUNT_SUFFIX}"
            if name not in shown:
                shown.append(name)
        return shown


class ChangeHistoryMixin(admin.options.BaseModelAdmin):
    """A "Change history" link on the rows whose every change django-pghistory keeps (assets,
    markets, restrictions, staff), to the events page filtered to that row."""

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        url = f"{reverse('admin:pghistory_events_changelist')}?obj={self.opts.label_lower}:{object_id}"
        return super().change_view(request, object_id, form_url, {"change_history_url": url, **(extra_context or {})})


class ReadOnlyAdmin(AmountsMixin, admin.ModelAdmin):
    """Money history: operators can look, filter and search, never add, edit or delete."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class LargeTablePaginator(Paginator):
    """Pages of a table with millions of rows, for `ModelAdmin.paginator`.

    Two things cost a large table's list page time in proportion to the table rather than the page:

    * the count under the list. Unfiltered, it is PostgreSQL's own estimate of the table's rows
      (the density ANALYZE last measured times the table's current size, as the planner reckons it)
      once that passes `estimate_from`; an exact `COUNT(*)` reads every row's index entry, or the
      whole table when the visibility map lags, on every page view. Filtered or searched lists
      are counted exactly: that is where an operator reads a total.
    * a deep page. `OFFSET n` makes PostgreSQL build the n rows it skips, each joined to its
      related rows; so a page is fetched as its primary keys first (the skipping then reads only
      an index) and then those rows.

    With an estimated count the last page can come out short or empty, or the real last page may
    lie beyond the page numbers offered; the list sorted the other way starts with those rows.
    """

    estimate_from = 100_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and _unfiltered(queryset):
            estimate = _estimated_rows(queryset)
            if estimate is not None and estimate >= self.estimate_from:
                return estimate
        return super().count

    def page(self, number: int | str) -> Page:
        queryset = self.object_list
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        if not isinstance(queryset, QuerySet) or bottom == 0:
            return super().page(number)
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        keys = list(queryset.values_list("pk", flat=True)[bottom:top])
        return self._get_page(queryset.filter(pk__in=keys), number, self)


def _unfiltered(queryset: QuerySet) -> bool:
    query = queryset.query
    return not (query.where or query.distinct or query.combinator or query.is_sliced)


def _estimated_rows(queryset: QuerySet) -> int | None:
    """The planner's row estimate for the model's whole table; None before its first ANALYZE."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT CASE WHEN reltuples < 0 OR relpages = 0 THEN NULL"
            " ELSE reltuples / relpages * (pg_relation_size(oid) / current_setting('block_size')::int) END"
            " FROM pg_class WHERE oid = %s::regclass",
            [connection.ops.quote_name(queryset.model._meta.db_table)],
        )
        row = cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


class ReadOnlyInline(AmountsMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=1000,
        help_text="Kept in the audit log with your name.",
    )


def confirm_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    *,
    title: str,
    service: Callable[[Model, dict], object],
    done: str,
    form_class: type[forms.Form] = ReasonForm,
) -> TemplateResponse | None:
    """An admin action that asks first: a page listing the selected rows with a form (a reason, at
    least); once it is filled in, `service(row, form.cleaned_data)` runs for each row."""
    form = form_class(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        run_service_action(modeladmin, request, queryset, lambda obj: service(obj, form.cleaned_data), done)
        return None
    context = page_context(
        modeladmin,
        request,
        title=title,
        form=form,
        objects=list(queryset.order_by("pk")),
        action=request.POST.get("action", ""),
        action_checkbox_name=admin.helpers.ACTION_CHECKBOX_NAME,
    )
    return TemplateResponse(request, "admin/confirm_action.html", context)


def page_context(
    modeladmin: admin.ModelAdmin, request: HttpRequest, *, title: str, form: forms.Form, **extra: object
) -> dict:
    return {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "subtitle": None,
        "opts": modeladmin.model._meta,
        "form": form,
        "media": modeladmin.media + form.media,
        **extra,
    }


def form_page(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    title: str,
    form: forms.Form,
    service: Callable[[dict], str],
    intro: str = "",
) -> HttpResponse:
    """A page of its own for an operator action that starts from nothing selected (propose an
    adjustment, cancel a user's orders). A refused service shows its reason on the form."""
    if request.method == "POST" and form.is_valid():
        try:
            done = service(form.cleaned_data)
        except ExchangeError as exc:
            fields = [name for name in exc.fields if name in form.fields]
            form.add_error(fields[0] if fields else None, exc.message)
        else:
            modeladmin.message_user(request, done, messages.SUCCESS)
            return HttpResponseRedirect(
                reverse(f"admin:{modeladmin.opts.app_label}_{modeladmin.opts.model_name}_changelist")
            )
    context = page_context(modeladmin, request, title=title, form=form, intro=intro)
    return TemplateResponse(request, "admin/form_page.html", context)


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
