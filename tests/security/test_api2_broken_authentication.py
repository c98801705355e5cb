"""OWASP API2:2023 Broken Authentication: who a request comes from, how a login is guessed, and how
long a stolen token keeps working."""

import uuid
from datetime import timedelta
from importlib import import_module

import pytest
from axes.models import AccessAttempt
from django.apps import apps
from django.conf import settings
from django.contrib.auth.forms import AdminPasswordChangeForm
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt import tokens as simplejwt_tokens
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import User
from accounts.tasks import tokens_flush_expired
from core.throttling import AnonRateThrottle, ScopedRateThrottle
from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "Another-horse-77"


def sign_in(api: APIClient, username: str, password: str = PASSWORD, **extra: str):
    return api.post("/api/auth/token/", {"username": username, "password": password}, format="json", **extra)


def tokens_of(username: str, password: str = PASSWORD) -> dict:
    answer = sign_in(APIClient(), username, password)
    assert answer.status_code == 200, answer.json()
    return answer.json()


def refresh(token: str):
    return APIClient().post("/api/auth/token/refresh/", {"refresh": token}, format="json")


def balances_with(access: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.get("/api/balances/").status_code


def an_address() -> str:
    """A client address no other test (or earlier run against the same Redis) has used."""
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{raw[2]}"


@pytest.fixture
def anon_limit(monkeypatch, throttle_window) -> None:
    # DRF reads the rates once, when the throttle classes are defined.
    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {**AnonRateThrottle.THROTTLE_RATES, "anon": "3/minute"})


# --- 1. the client's address comes from the trusted proxies, never from the client ----------------


def test_with_no_trusted_proxy_a_forged_x_forwarded_for_does_not_escape_the_throttle(settings, anon_limit) -> None:
    settings.TRUSTED_PROXY_COUNT = 0
    api = APIClient(REMOTE_ADDR=an_address())
    statuses = [api.get("/api/markets/", HTTP_X_FORWARDED_FOR=an_address()).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


def test_behind_one_trusted_proxy_the_right_most_address_is_the_client(settings, anon_limit) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    proxy, client = an_address(), an_address()
    api = APIClient(REMOTE_ADDR=proxy)
    # Whatever the client writes into the header stays left of what the proxy appends.
    statuses = [
        api.get("/api/markets/", HTTP_X_FORWARDED_FOR=f"{an_address()}, {client}").status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    # Another client behind the same proxy has a count of its own.
    assert api.get("/api/markets/", HTTP_X_FORWARDED_FOR=an_address()).status_code == 200


def test_the_token_login_throttle_counts_by_the_same_address(settings, monkeypatch, throttle_window) -> None:
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {**ScopedRateThrottle.THROTTLE_RATES, "auth": "2/minute"})
    settings.TRUSTED_PROXY_COUNT = 0
    api = APIClient(REMOTE_ADDR=an_address())
    statuses = [
        sign_in(api, f"nobody-{n}", "wrong-password", HTTP_X_FORWARDED_FOR=an_address()).status_code for n in range(3)
    ]
    assert statuses == [401, 401, 429]


# --- 2. guessing a password locks the username, whatever the address -------------------------------


@pytest.fixture
def lockout(settings) -> None:
    settings.API_LOGIN_FAILURE_LIMIT = 3


def test_failed_logins_from_many_addresses_lock_the_username_out(lockout) -> None:
    user = UserFactory()
    statuses = [sign_in(APIClient(REMOTE_ADDR=an_address()), user.username, f"wrong-{n}").status_code for n in range(3)]
    assert statuses == [401, 401, 429]

    refused = sign_in(APIClient(REMOTE_ADDR=an_address()), user.username)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "login_locked"
    assert int(refused["Retry-After"]) == settings.API_LOGIN_COOLOFF_SECONDS


def test_case_variants_of_a_username_share_one_count(lockout) -> None:
    user = UserFactory(username="casey")
    for name in ("CASEY", "Casey", "casey"):
        sign_in(APIClient(REMOTE_ADDR=an_address()), name, "wrong-password")
    assert sign_in(APIClient(), "cAsEy").status_code == 429
    assert set(AccessAttempt.objects.values_list("username", flat=True)) == {user.username}


def test_attempts_while_locked_do_not_extend_the_lock_and_it_ends_after_the_cool_off(lockout) -> None:
    user = UserFactory()
    for n in range(3):
        sign_in(APIClient(REMOTE_ADDR=an_address()), user.username, f"wrong-{n}")
    for _ in range(5):
        assert sign_in(APIClient(REMOTE_ADDR=an_address()), user.username, "wrong-again").status_code == 429
    assert sum(AccessAttempt.objects.values_list("failures_since_start", flat=True)) == 3

    # The cool-off passes after the last counted failure (the refused attempts did not move it).
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - timedelta(seconds=settings.API_LOGIN_COOLOFF_SECONDS + 1)
    )
    assert sign_in(APIClient(), user.username).status_code == 200


def test_a_successful_login_clears_only_its_own_username(lockout) -> None:
    alice, bob = UserFactory(), UserFactory()
    api = APIClient(REMOTE_ADDR=an_address())
    for who in (alice, bob, alice, bob):
        sign_in(api, who.username, "wrong-password")
    assert sign_in(api, alice.username).status_code == 200

    assert not AccessAttempt.objects.filter(username=alice.username).exists()
    assert AccessAttempt.objects.get(username=bob.username).failures_since_start == 2
    assert sign_in(api, bob.username, "wrong-again").status_code == 429


# --- 3. a refresh token used twice ends the login it came from -------------------------------------


def test_a_refresh_token_used_twice_revokes_every_token_of_that_login() -> None:
    user = UserFactory()
    first = tokens_of(user.username)
    other_login = tokens_of(user.username)

    rotated = refresh(first["refresh"])
    assert rotated.status_code == 200
    # The thief (or the owner) presents the old refresh token again.
    reused = refresh(first["refresh"])
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "token_reused"

    assert refresh(rotated.json()["refresh"]).status_code == 401
    assert balances_with(rotated.json()["access"]) == 401
    assert balances_with(first["access"]) == 401
    # Another login of the same user is not part of that family.
    assert balances_with(other_login["access"]) == 200
    assert refresh(other_login["refresh"]).status_code == 200


def test_every_refresh_token_of_a_reused_login_is_blacklisted_in_the_database() -> None:
    user = UserFactory()
    first = tokens_of(user.username)
    rotated = refresh(first["refresh"]).json()
    refresh(first["refresh"])
    jti = RefreshToken(rotated["refresh"], verify=False)["jti"]
    assert BlacklistedToken.objects.filter(token__jti=jti).exists()


# --- 4. a login ends at a fixed time however often it is refreshed ----------------------------------


def test_refreshing_never_carries_a_login_past_its_absolute_lifetime(settings, monkeypatch) -> None:
    settings.JWT_LOGIN_LIFETIME = timedelta(hours=2)
    user = UserFactory()
    first = tokens_of(user.username)
    auth_time = AccessToken(first["access"])["auth_time"]

    current = first["refresh"]
    for _ in range(3):
        answer = refresh(current)
        assert answer.status_code == 200
        current = answer.json()["refresh"]
        token, access = RefreshToken(current, verify=False), AccessToken(answer.json()["access"])
        # The original sign-in time travels with every token, and none outlives it by more than the lifetime.
        assert token["auth_time"] == access["auth_time"] == auth_time
        assert token["exp"] <= auth_time + 7200 and access["exp"] <= auth_time + 7200

    # SimpleJWT's clock, two hours and a minute after the sign-in.
    real = simplejwt_tokens.aware_utcnow
    monkeypatch.setattr(simplejwt_tokens, "aware_utcnow", lambda: real() + timedelta(hours=2, minutes=1))
    assert refresh(current).status_code == 401


def test_the_default_login_lifetime_is_seven_days() -> None:
    assert timedelta(days=7) == settings.JWT_LOGIN_LIFETIME


# --- 5. a new password ends every login ----------------------------------------------------------


def test_changing_the_password_ends_every_login_of_the_user() -> None:
    user = UserFactory()
    phone, laptop = tokens_of(user.username), tokens_of(user.username)
    bystander = tokens_of(UserFactory().username)

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {phone['access']}")
    changed = client.post(
        "/api/auth/password/", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}, format="json"
    )
    assert changed.status_code == 204

    for tokens in (phone, laptop):
        assert balances_with(tokens["access"]) == 401
        assert refresh(tokens["refresh"]).status_code == 401
    assert balances_with(bystander["access"]) == 200
    assert sign_in(APIClient(), user.username).status_code == 401
    assert balances_with(tokens_of(user.username, NEW_PASSWORD)["access"]) == 200


def test_a_password_change_needs_the_current_password_and_a_strong_new_one() -> None:
    user = UserFactory()
    tokens = tokens_of(user.username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")

    wrong = client.post(
        "/api/auth/password/", {"current_password": "not-it-at-all", "new_password": NEW_PASSWORD}, format="json"
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"]["code"] == "wrong_password"
    weak = client.post("/api/auth/password/", {"current_password": PASSWORD, "new_password": "123"}, format="json")
    assert weak.status_code == 400
    assert User.objects.get(pk=user.pk).check_password(PASSWORD)
    assert balances_with(tokens["access"]) == 200


def test_guessing_the_current_password_counts_towards_the_lock_out(lockout) -> None:
    user = UserFactory()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_of(user.username)['access']}")
    statuses = [
        client.post(
            "/api/auth/password/", {"current_password": f"wrong-{n}", "new_password": NEW_PASSWORD}, format="json"
        ).status_code
        for n in range(3)
    ]
    assert statuses == [400, 400, 429]
    assert sign_in(APIClient(), user.username).status_code == 429


def test_an_operator_setting_a_new_password_ends_the_users_logins() -> None:
    user = UserFactory()
    tokens = tokens_of(user.username)
    form = AdminPasswordChangeForm(user, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert form.is_valid(), form.errors
    form.save()
    assert balances_with(tokens["access"]) == 401
    assert refresh(tokens["refresh"]).status_code == 401


def test_a_new_password_blacklists_every_outstanding_refresh_token_of_the_user() -> None:
    user = UserFactory()
    tokens_of(user.username)
    tokens_of(user.username)
    user.set_password(NEW_PASSWORD)
    user.save()
    live = OutstandingToken.objects.filter(user=user, blacklistedtoken__isnull=True)
    assert not live.exists()


# --- 6. logging out ends the access token too -----------------------------------------------------


def test_logout_ends_the_access_token_it_was_sent_with() -> None:
    user = UserFactory()
    tokens = tokens_of(user.username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert client.post("/api/auth/logout/", {"refresh": tokens["refresh"]}, format="json").status_code == 205

    assert client.get("/api/balances/").status_code == 401
    assert client.get("/api/balances/").json()["error"]["code"] == "login_ended"
    assert refresh(tokens["refresh"]).status_code == 401


def forget_everything_in_redis() -> None:
    """What a restart of Redis (it keeps nothing on disk) does to this run's keys."""
    client = cache._cache.get_client(write=True)
    for key in client.scan_iter(f"{settings.CACHE_KEY_PREFIX}:*"):
        client.delete(key)


@pytest.mark.services
def test_a_logged_out_access_token_stays_refused_after_redis_forgets_everything() -> None:
    user = UserFactory()
    tokens = tokens_of(user.username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    client.post("/api/auth/logout/", {"refresh": tokens["refresh"]}, format="json")

    forget_everything_in_redis()
    assert client.get("/api/balances/").status_code == 401


def test_while_redis_is_away_an_ended_login_is_refused_from_the_database(settings) -> None:
    user = UserFactory()
    tokens = tokens_of(user.username)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    client.post("/api/auth/logout/", {"refresh": tokens["refresh"]}, format="json")

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    assert client.get("/api/balances/").status_code == 401
    assert balances_with(tokens_of(user.username)["access"]) == 200


def test_a_token_without_a_login_is_refused() -> None:
    """Tokens minted outside a sign-in (or before logins were tracked) name no login to check."""
    token = RefreshToken.for_user(UserFactory()).access_token
    assert balances_with(str(token)) == 401


# --- 7. expired tokens leave the blacklist on a schedule ------------------------------------------


def test_the_beat_schedule_flushes_expired_tokens_and_keeps_live_ones() -> None:
    assert any(
        entry["task"] == "accounts.tasks.tokens_flush_expired" for entry in settings.CELERY_BEAT_SCHEDULE.values()
    )
    user = UserFactory()
    live = tokens_of(user.username)
    refresh(live["refresh"])
    expired = OutstandingToken.objects.create(
        user=user, jti=uuid.uuid4().hex, token="x", expires_at=timezone.now() - timedelta(seconds=1)
    )
    BlacklistedToken.objects.create(token=expired)

    tokens_flush_expired()

    assert not OutstandingToken.objects.filter(pk=expired.pk).exists()
    assert OutstandingToken.objects.filter(user=user).count() == 2
    assert BlacklistedToken.objects.count() == 1


# --- 8. one account per username and per email, whatever the case -------------------------------


def register(username: str, email: str):
    return APIClient().post(
        "/api/auth/register/", {"username": username, "password": PASSWORD, "email": email}, format="json"
    )


def test_a_username_differing_only_in_case_is_taken() -> None:
    assert register("alice", "alice@example.com").status_code == 201
    answer = register("Alice", "alice2@example.com")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "username_taken"
    assert User.objects.count() == 1


def test_an_email_differing_only_in_case_is_taken() -> None:
    assert register("alice", "alice@example.com").status_code == 201
    answer = register("alicia", "Alice@Example.COM")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "email_taken"


def test_the_database_refuses_case_duplicates_whoever_writes_them() -> None:
    UserFactory(username="carol", email="carol@example.com")
    for fields in (
        {"username": "CAROL", "email": "c2@example.com"},
        {"username": "carol2", "email": "CAROL@example.com"},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            User.objects.create(**fields)
    # Users without an email are many.
    User.objects.create(username="x1", email="")
    User.objects.create(username="x2", email="")


def test_login_takes_the_username_in_any_case() -> None:
    UserFactory(username="dora")
    assert sign_in(APIClient(), "DORA").status_code == 200


def test_the_migration_names_existing_case_duplicates_instead_of_failing_obscurely() -> None:
    migration = import_module("accounts.migrations.0004_logins_and_case_insensitive_identity")
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX user_username_ci_unique")
    UserFactory(username="erin")
    UserFactory(username="Erin", email="other@example.com")

    with pytest.raises(RuntimeError, match="erin"):
        migration.refuse_case_duplicates(apps, None)


# --- 7. the token says who it is; the database is read only for what it does not say ---------------


def test_the_user_of_a_token_is_read_from_the_database_only_when_needed_and_then_whole() -> None:
    stored = UserFactory(trading_restricted=True)
    user = User.from_token(stored.pk)
    with CaptureQueriesContext(connection) as queries:
        assert user.pk == stored.pk
    assert len(queries) == 0
    with CaptureQueriesContext(connection) as queries:
        assert (user.username, user.trading_restricted, user.is_active) == (stored.username, True, True)
    assert len(queries) == 1
