from axes import apps as axes_apps
from django.apps import AppConfig
from django_otp.plugins.otp_totp import apps as otp_totp_apps
from pghistory import apps as pghistory_apps


class ConsoleConfig(AppConfig):
    """The operators' side of the admin: roles, sign-in with a second factor, lock-out, seeded staff.

    The top layer: it may import accounts, matching and settlement; none of them imports it.
    """

    name = "console"
    verbose_name = "Operators"
    default = True


# The sign-in and history libraries, under names an operator reads in the admin's menu.


class SignInRecordsConfig(axes_apps.AppConfig):
    verbose_name = "Sign-in records"
    default = False


class SecondFactorsConfig(otp_totp_apps.DefaultConfig):
    verbose_name = "Second factors"
    default = False


class ChangeHistoryConfig(pghistory_apps.PGHistoryConfig):
    verbose_name = "Change history"
    default = False
