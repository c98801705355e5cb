"""The admin site: the operators' dashboard.

exchange/apps.py makes this the default site, so every app's `admin.site.register` lands here.
"""

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse


class ExchangeAdminSite(admin.AdminSite):
    site_header = "Exchange operations"
    site_title = "Exchange operations"
    index_title = "Accounts, markets and settlement"

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        from settlement.selectors import operations_overview

        return super().index(request, {"overview": operations_overview(), **(extra_context or {})})
