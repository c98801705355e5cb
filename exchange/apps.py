from django.contrib.admin.apps import AdminConfig


class ExchangeAdminConfig(AdminConfig):
    default_site = "console.sites.ExchangeAdminSite"
