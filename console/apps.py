from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operators' side of the admin: roles, sign-in with a second factor, lock-out, seeded staff.

    The top layer: it may import accounts, matching and settlement; none of them imports it.
    """

    name = "console"
    verbose_name = "Operators"
