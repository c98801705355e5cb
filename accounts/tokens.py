"""JSON web tokens tied to a login (`accounts.models.Login`), and the list of ended logins in Redis.

Every token names its login (`login` claim) and the time of the sign-in with a password that began
it (`auth_time`); both are copied into every refreshed token and every access token. No token
expires later than its login (`Login.expires_at`, `JWT_LOGIN_LIFETIME` after `auth_time`).

A login that ended (logout, a reused refresh token, a new password, the user deactivated) must stop its access tokens at
once, without a database read per request: its id goes into Redis for as long as any of its access
tokens can live, and the authentication class looks there (one round trip for the login and the
token's own id). Redis keeps nothing on disk, so a marker key says the list is complete: when it is
missing (Redis restarted), the logins ended within that time are read back from PostgreSQL once.
While Redis is unreachable the login is looked up in PostgreSQL instead.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta

import structlog
from django.core.cache import cache
from django.utils import timezone
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token
from rest_framework_simplejwt.utils import datetime_from_epoch, datetime_to_epoch

from accounts.models import Login, User

log = structlog.get_logger(__name__)

LOGIN_CLAIM = "login"
AUTH_TIME_CLAIM = "auth_time"

_READY = "auth:ended:ready"


def _login_key(login_id: object) -> str:
    return f"auth:ended:login:{login_id}"


def _jti_key(jti: object) -> str:
    return f"auth:ended:jti:{jti}"


def access_lifetime() -> timedelta:
    """How long an access token of an ended login may still be presented (with the clock leeway)."""
    leeway = api_settings.LEEWAY
    leeway = leeway if isinstance(leeway, timedelta) else timedelta(seconds=leeway)
    return api_settings.ACCESS_TOKEN_LIFETIME + leeway + timedelta(seconds=5)


class LoginRefreshToken(RefreshToken):
    """A refresh token whose use is checked against its login row, which knows the one refresh token
    of the login that may still be used, instead of against the blacklist table: a token used a
    second time must be recognised (to end its login), not merely refused."""

    def check_blacklist(self) -> None:
        return None


def _cap(token: Token, expires_at: datetime) -> None:
    token["exp"] = min(token["exp"], datetime_to_epoch(expires_at))


def refresh_token_new(*, login: Login, previous: RefreshToken | None = None) -> RefreshToken:
    """A refresh token of `login`: the first one, or the one that replaces `previous` (same claims,
    new id and times). Recorded as outstanding, as SimpleJWT's blacklist expects."""
    token = LoginRefreshToken()
    if previous is not None:
        for claim, value in previous.payload.items():
            if claim not in RefreshToken.no_copy_claims:
                token[claim] = value
    else:
        token[api_settings.USER_ID_CLAIM] = str(login.user_id)
        token[LOGIN_CLAIM] = str(login.pk)
        token[AUTH_TIME_CLAIM] = datetime_to_epoch(login.started_at)
    _cap(token, login.expires_at)
    OutstandingToken.objects.create(
        user_id=login.user_id,
        jti=token[api_settings.JTI_CLAIM],
        token=str(token),
        created_at=token.current_time,
        expires_at=datetime_from_epoch(token["exp"]),
    )
    return token


def access_token_for(refresh: RefreshToken, *, login: Login) -> AccessToken:
    access = refresh.access_token
    _cap(access, login.expires_at)
    return access


def now_for_tokens() -> datetime:
    """SimpleJWT's clock, which stamps and checks every token."""
    return RefreshToken().current_time


# --- the ended logins, in Redis ---------------------------------------------------------------------


def logins_deny(*, login_ids: Iterable[object], access: Token | None = None) -> None:
    """Refuse every access token of these logins (and `access` itself) from now on. A failed write is
    logged: the login is ended in PostgreSQL already, and the check falls back to it while Redis is
    away; after a restart the list is read back."""
    entries = {_login_key(login_id): 1 for login_id in login_ids}
    ttl = int(access_lifetime().total_seconds())
    try:
        if entries:
            cache.set_many(entries, timeout=ttl)
        if access is not None:
            remaining = int(access["exp"] - datetime_to_epoch(timezone.now())) + 1
            if remaining > 0:
                cache.set(_jti_key(access[api_settings.JTI_CLAIM]), 1, timeout=remaining)
    except (RedisError, OSError) as exc:
        log.warning("ended_logins_not_written", logins=list(entries), error=repr(exc))


def _restore() -> None:
    since = timezone.now() - access_lifetime()
    ended = list(Login.objects.filter(ended_at__gte=since).values_list("pk", flat=True))
    cache.set_many({_login_key(pk): 1 for pk in ended}, timeout=int(access_lifetime().total_seconds()))
    cache.set(_READY, 1, timeout=None)
    log.info("ended_logins_restored", count=len(ended))


def login_ended(token: Token) -> bool:
    login_id = token[LOGIN_CLAIM]
    keys = [_READY, _login_key(login_id), _jti_key(token.get(api_settings.JTI_CLAIM))]
    try:
        found = cache.get_many(keys)
        if _READY not in found:
            _restore()
            found = cache.get_many(keys)
    except (RedisError, OSError) as exc:
        log.warning("ended_logins_unavailable", error=repr(exc))
        return Login.objects.filter(pk=login_id, ended_at__isnull=False).exists()
    return any(key in found for key in keys[1:])


class LoginAuthentication(JWTAuthentication):
    """SimpleJWT's bearer token authentication, refusing tokens of a login that has ended.

    The token's claims are enough to know whose request it is: the user is not read from the
    database (`User.from_token`). A login ends when its user is deactivated, as when their password
    changes, so the Redis check also stands for SimpleJWT's `is_active` read.
    """

    def get_user(self, validated_token: Token) -> User:
        user_id = validated_token.get(api_settings.USER_ID_CLAIM)
        if user_id is None or not str(user_id).isdigit():
            raise InvalidToken("Token contained no recognizable user identification")
        return User.from_token(user_id)

    def get_validated_token(self, raw_token: bytes) -> Token:
        token = super().get_validated_token(raw_token)
        if not token.get(LOGIN_CLAIM) or not token.get(AUTH_TIME_CLAIM):
            raise InvalidToken("Token belongs to no sign-in; sign in again.")
        if login_ended(token):
            raise exceptions.AuthenticationFailed("This sign-in has ended; sign in again.", code="login_ended")
        return token


class LoginAuthenticationScheme(SimpleJWTScheme):
    """The OpenAPI schema describes it as the bearer JWT it is."""

    target_class = "accounts.tokens.LoginAuthentication"
