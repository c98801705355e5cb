"""The admin pages the console owns."""

from django.contrib import admin
from django_otp.plugins.otp_totp.models import TOTPDevice

from exchange.admin_tools import ReadOnlyAdmin

admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(ReadOnlyAdmin):
    """Who has set up an authenticator app. The keys are never shown; removing one is the audited
    "Reset second factor" action on users."""

    list_display = ["user", "name", "confirmed", "created_at", "last_used_at", "throttling_failure_count"]
    list_filter = ["confirmed"]
    search_fields = ["user__username"]
    list_select_related = ["user"]
    fields = list_display
