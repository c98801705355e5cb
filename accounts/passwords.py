"""A new password ends every login of its user.

Django calls `password_changed` on every configured password validator once a new password is
saved, whichever door set it (the API, the admin's forms, `manage.py changepassword`), which makes
a validator the one place that sees them all. This one checks nothing about the password itself.
"""

from accounts.models import Login, User
from accounts.services import user_logins_end


class LoginsEndOnPasswordChange:
    def validate(self, password: str, user: User | None = None) -> None:
        return None

    def password_changed(self, password: str, user: User | None = None) -> None:
        if user is not None and user.pk is not None:
            user_logins_end(user=user, reason=Login.EndReason.PASSWORD_CHANGED)

    def get_help_text(self) -> str:
        return "Setting a new password signs the account out everywhere."
