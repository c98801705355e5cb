"""CSV exports of money history for the admin. Every export writes an audit row (the audit log is
this app's table), so the mixin lives with the audit log rather than with the shared admin pieces."""

import csv
import io
import itertools
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse

from accounts.services import audit_record
from core.admin_tools import page_context
from core.api import decimal_str


class DateRangeForm(forms.Form):
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To (included)", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict:
        data = super().clean()
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            raise forms.ValidationError("The range ends before it starts.")
        return data


def _csv_value(value: object) -> object:
    if isinstance(value, Decimal):
        return decimal_str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, cls=DjangoJSONEncoder)
    return value


class CsvExportMixin(admin.options.BaseModelAdmin):
    """An "Export CSV" page for a date range, for operators with the model's `export_<model>`
    permission. Rows stream out as they are read, so a month of ledger lines needs no memory to
    speak of; every export is audited with who, what and which days."""

    export_fields: Sequence[str] = ()
    export_date_field = "created_at"

    def _export_permission(self) -> str:
        return f"{self.opts.app_label}.export_{self.opts.model_name}"

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.export_view)
        name = f"{self.opts.app_label}_{self.opts.model_name}_export"
        return [path("export/", view, name=name), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        if request.user.has_perm(self._export_permission()):
            url = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_export")
            extra_context = {"export_url": url, **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm(self._export_permission()):
            raise PermissionDenied
        form = DateRangeForm(request.GET or None)
        if not form.is_valid():
            context = page_context(
                self, request, title=f"Export {self.opts.verbose_name_plural} as CSV", form=form, method="get"
            )
            return TemplateResponse(request, "admin/form_page.html", context)
        start, end = form.cleaned_data["start"], form.cleaned_data["end"]
        since = datetime.combine(start, time.min, tzinfo=UTC)
        until = datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
        rows = (
            self.model._default_manager.filter(
                **{f"{self.export_date_field}__gte": since, f"{self.export_date_field}__lt": until}
            )
            .order_by("pk")
            .values_list(*self.export_fields)
        )
        audit_record(
            actor=request.user,
            action="export_csv",
            target=self.opts.label_lower,
            start=start.isoformat(),
            end=end.isoformat(),
        )
        name = f"{self.opts.model_name}-{start.isoformat()}-{end.isoformat()}.csv"
        return StreamingHttpResponse(
            self._csv_lines(rows),
            content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    def _csv_lines(self, rows: QuerySet) -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in itertools.chain([self.export_fields], rows.iterator(chunk_size=2000)):
            writer.writerow([_csv_value(value) for value in row])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
