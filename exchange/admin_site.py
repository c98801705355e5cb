from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse


class ExchangeAdminSite(admin.AdminSite):
    site_header = "Exchange operations"
    site_title = "Exchange operations"
    index_title = "Accounts, markets and settlement"

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        from settlement.selectors import operations_overview, operator_dashboard

        context = {
            "overview": operations_overview(),
            "dashboard": operator_dashboard(user=request.user),
            **(extra_context or {}),
        }
        return super().index(request, context)
