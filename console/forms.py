"""The admin's sign-in forms."""

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_otp import verify_token

from accounts.models import User
from console.selectors import totp_devices_confirmed


def code_field(label: str, *, required: bool, help_text: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        required=required,
        max_length=12,
        help_text=help_text,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "spellcheck": "false", "size": 8}
        ),
    )


def digits(value: str) -> str:
    """A code as typed, without the spaces apps show in the middle of it."""
    return "".join(value.split())


class AdminLoginForm(AdminAuthenticationForm):
    """Username, password and, for a user who has set up an authenticator app, its current code.

    The password is checked first (through django-axes, which refuses a locked-out username). A
    staff user with a confirmed device must then give a valid code, whatever ADMIN_REQUIRE_2FA says;
    a wrong or missing code is a failed login for django-axes like a wrong password, so guessing codes
    locks the username out as fast as guessing passwords.
    """

    otp_token = code_field(
        "Authentication code",
        required=False,
        help_text="The 6 digits your authenticator app shows. Leave it empty if you have not set one up yet.",
    )

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "code_required": "Enter the 6-digit code from your authenticator app.",
        "code_invalid": "That authentication code is not right. Type the newest code your app shows.",
        "code_throttled": "Too many wrong codes in a row: wait %(seconds)d seconds, then type the newest code.",
    }

    def clean(self) -> dict:
        cleaned = super().clean()
        user = self.get_user()
        if user is not None:
            self.second_factor_check(user)
        return cleaned

    def second_factor_check(self, user: User) -> None:
        devices = totp_devices_confirmed(user=user)
        if not devices:
            # Nothing to check yet: with ADMIN_REQUIRE_2FA on, the site lets this session reach the
            # enrolment page and nothing else.
            return
        token = digits(self.cleaned_data.get("otp_token") or "")
        if token:
            for device in devices:
                verified = verify_token(user, device.persistent_id, token)
                if verified is not None:
                    # django-otp's user_logged_in receiver stores it in the session: a verified one.
                    user.otp_device = verified
                    return
        user_login_failed.send(sender=__name__, credentials={"username": user.get_username()}, request=self.request)
        raise self.code_error(token, devices)

    def code_error(self, token: str, devices: list) -> ValidationError:
        if not token:
            return ValidationError(self.error_messages["code_required"], code="code_required")
        waits = [
            extra.get("locked_until") for allowed, extra in (d.verify_is_allowed() for d in devices) if not allowed
        ]
        if waits and all(waits):
            seconds = max(1, int((min(waits) - timezone.now()).total_seconds()) + 1)
            return ValidationError(
                self.error_messages["code_throttled"], code="code_throttled", params={"seconds": seconds}
            )
        return ValidationError(self.error_messages["code_invalid"], code="code_invalid")


class TwoFactorEnrolForm(forms.Form):
    otp_token = code_field(
        "Code from the app",
        required=True,
        help_text="Once the app shows the account, type the 6 digits it shows now.",
    )

    def clean_otp_token(self) -> str:
        token = digits(self.cleaned_data["otp_token"])
        if not (token.isdigit() and len(token) == 6):
            raise ValidationError("Type the 6 digits the app shows.", code="invalid")
        return token


class SecondFactorResetForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why, for the audit log: for example, the phone with the app was lost.",
    )
